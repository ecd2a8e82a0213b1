package protocol

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/flynn/noise"

	"cardlink/internal/channel"
	"cardlink/internal/link/linktest"
	"cardlink/internal/txn"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

const card = "4111111111111111"

var cert = bytes.Repeat([]byte{0x30}, 600) // stands in for a ~600-byte card certificate

func seq(n int, start byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = start + byte(i)
	}
	return b
}

// samples is one typical message per type; the golden files hold their
// encodings.
func samples() []Message {
	return []Message{
		&Error{Code: CodeCardRevoked, Text: "card revoked on 2026-11-28"},
		&Hello{Software: "cardlink/0.1", Features: FeaturePINPad | FeaturePrinter},
		&ChallengeRequest{CardNumber: card, CertID: CertID(cert), Purpose: txn.PurposeAuth},
		&Challenge{Challenge: seq(32, 0x10), TTL: 60, Context: seq(32, 0x80), CVMs: CVMs(txn.CVMOfflinePIN, txn.CVMOnlinePIN, txn.CVMBiometric)},
		&AuthResponse{Challenge: seq(32, 0x10), Counter: 70000, CVM: txn.CVMOnlinePIN, Signature: seq(72, 0x30), PINBlock: seq(16, 0xA0)},
		&AuthResult{Code: CodeOK, CVM: txn.CVMOnlinePIN},
		&TransactionOffer{Transaction: seq(120, 0xE1), CVMs: CVMs(txn.CVMOfflinePIN), TTL: 300},
		&TransactionApproval{ID: seq(16, 1), Counter: 70001, CVM: txn.CVMOfflinePIN, Signature: seq(71, 0x30)},
		&OfferRequest{Reference: "12345674", CardNumber: card, CertID: CertID(cert)},
		&TransactionResult{ID: seq(16, 1), Code: CodeOK, CVM: txn.CVMOfflinePIN, Goods: [][]byte{seq(180, 0xE6)}},
		&PurseRequest{Kind: PurseKindLoad, CardNumber: card, CertID: CertID(cert), Amount: 5000, Currency: "EUR", Seq: 3, Balance: 1250},
		&PurseLoad{ID: seq(16, 2), Load: seq(118, 0xE5)},
		&LoadReceipt{ID: seq(16, 2), Counter: 70002, Signature: seq(71, 0x30), Balance: 6250},
		&ServerKeys{Keys: [][]byte{seq(32, 0x40), seq(32, 0x60)}}, // last: TestAuthExchangeBudget takes it
	}
}

// more are valid messages at the edges of their ranges.
func more() []Message {
	return []Message{
		&Error{Code: 999}, // a code from a newer peer
		&Error{Code: CodeInternal, Text: strings.Repeat("é", MaxText/2)},
		&Hello{},
		&Hello{Software: strings.Repeat("x", MaxSoftware), Features: 1 << 31},
		&ChallengeRequest{CardNumber: "0000000000000000", CertID: CertID(cert), Purpose: txn.PurposeLoadReceipt, Certificate: cert},
		&ChallengeRequest{CardNumber: card, CertID: CertID(seq(MaxCertificate, 0)), Purpose: txn.PurposeTransaction, Certificate: seq(MaxCertificate, 0)},
		&Challenge{Challenge: make([]byte, 32), TTL: 1, CVMs: CVMs(txn.CVMNone)},
		&Challenge{Challenge: seq(32, 0), TTL: 1<<32 - 1, Context: seq(MaxContext, 0), CVMs: CVMs(txn.CVMNone, txn.CVMOfflinePIN, txn.CVMOnlinePIN, txn.CVMBiometric)},
		&AuthResponse{Challenge: seq(32, 0), Counter: 1, Signature: seq(MinSignature, 0)},
		&AuthResponse{Challenge: seq(32, 0), Counter: 1<<32 - 1, CVM: txn.CVMBiometric, Signature: seq(MaxSignature, 0), Biometric: seq(MaxBiometric, 0)},
		&AuthResult{},
		&AuthResult{Code: CodePINIncorrect, TriesLeft: 2},
		&TransactionOffer{Transaction: seq(MaxTransaction, 0), CVMs: CVMs(txn.CVMNone), TTL: 1},
		&TransactionOffer{Transaction: seq(1, 0), CVMs: CVMs(txn.CVMNone, txn.CVMOfflinePIN, txn.CVMOnlinePIN, txn.CVMBiometric), TTL: 1<<32 - 1},
		&OfferRequest{CardNumber: card, CertID: CertID(cert)},                                 // pushed: no reference
		&OfferRequest{CardNumber: card, CertID: CertID(cert), Paid: seq(TransactionIDLen, 1)}, // pushed, its result lost
		&OfferRequest{Reference: "00000000", CardNumber: "0000000000000000", CertID: CertID(seq(MaxCertificate, 0)), Certificate: seq(MaxCertificate, 0)},
		&TransactionResult{ID: seq(16, 0)}, // CodeOK, nothing else
		&TransactionResult{ID: seq(16, 0xF0), Code: CodePINIncorrect, TriesLeft: 2},
		&TransactionResult{ID: seq(16, 0), Code: CodeHolderDeclined},
		&TransactionResult{ID: seq(16, 0), Code: CodeInsufficientFunds},
		&TransactionResult{ID: seq(16, 0), Code: CodeOK, CVM: txn.CVMBiometric, Goods: [][]byte{seq(MaxGood, 0)}},
		&TransactionResult{ID: seq(16, 0), Code: 999}, // a code from a newer peer
		&TransactionApproval{ID: seq(16, 0), Counter: 1, CVM: txn.CVMNone, Signature: seq(8, 0), PINBlock: seq(16, 0), Biometric: seq(1, 0)},
		&ServerKeys{Keys: [][]byte{make([]byte, ServerKeyLen)}},
		&PurseRequest{Kind: PurseKindUnload, CardNumber: card, CertID: CertID(cert), Amount: 1, Currency: "USD"}, // seq and balance 0
		&PurseRequest{Kind: PurseKindLoad, CardNumber: "0000000000000000", CertID: CertID(seq(MaxCertificate, 0)), Certificate: seq(MaxCertificate, 0),
			Amount: 1<<63 - 1, Currency: "ZZZ", Seq: 1<<32 - 2, Balance: 1<<63 - 1},
		&PurseLoad{ID: seq(16, 0), Load: seq(MaxSignedLoad, 0)},
		&LoadReceipt{ID: seq(16, 0), Counter: 1, Signature: seq(MinSignature, 0)},
		&ServerKeys{Keys: [][]byte{seq(32, 0), seq(32, 1), seq(32, 2), seq(32, 3), seq(32, 4), seq(32, 5), seq(32, 6), seq(32, 7)}},
	}
}

func TestRoundTrip(t *testing.T) {
	for _, m := range append(samples(), more()...) {
		b, err := Encode(m)
		if err != nil {
			t.Errorf("Encode(%+v) = %v", m, err)
			continue
		}
		if b[0] != Version || Type(b[1]) != m.Type() {
			t.Errorf("Encode(%+v) header = % x, want %02x %02x", m, b[:2], Version, byte(m.Type()))
		}
		got, err := Decode(b)
		if err != nil || !reflect.DeepEqual(got, m) {
			t.Errorf("Decode(Encode(%+v)) = %+v, %v, want the message", m, got, err)
		}
	}
}

func TestGolden(t *testing.T) {
	for _, m := range samples() {
		t.Run(m.Type().String(), func(t *testing.T) {
			b, err := Encode(m)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", "golden", m.Type().String()+".hex")
			if *update {
				if err := os.WriteFile(path, []byte(hex.EncodeToString(b)+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("reading golden file (run with -update to create it): %v", err)
			}
			if got := hex.EncodeToString(b); got != strings.TrimSpace(string(want)) {
				t.Errorf("Encode(%+v) = %s, want %s (from %s)", m, got, want, path)
			}
			wantBytes, err := hex.DecodeString(strings.TrimSpace(string(want)))
			if err != nil {
				t.Fatal(err)
			}
			if got, err := Decode(wantBytes); err != nil || !reflect.DeepEqual(got, m) {
				t.Errorf("Decode(golden %s) = %+v, %v, want %+v", m.Type(), got, err, m)
			}
		})
	}
}

// msg builds a message from a type and a hex body.
func msg(typ Type, bodyHex string) []byte {
	body, err := hex.DecodeString(strings.ReplaceAll(bodyHex, " ", ""))
	if err != nil {
		panic(err)
	}
	return append([]byte{Version, byte(typ)}, body...)
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"one byte", []byte{Version}, ErrMalformed},
		{"too large", append(msg(TypeHello, "a0"), make([]byte, MaxSize)...), ErrTooLarge},
		{"version 0", []byte{0, byte(TypeHello), 0xa0}, ErrVersion},
		{"version 2", []byte{2, byte(TypeHello), 0xa0}, ErrVersion},
		{"type 0", msg(0, "a0"), ErrUnknownType},
		{"type 15", msg(15, "a0"), ErrUnknownType},
		{"type 255", msg(255, "a0"), ErrUnknownType},
		{"no body", msg(TypeHello, ""), ErrMalformed},
		{"trailing bytes", msg(TypeHello, "a0 00"), ErrMalformed},
		{"array body", msg(TypeHello, "80"), ErrMalformed},
		{"integer body", msg(TypeHello, "01"), ErrMalformed},
		{"truncated map", msg(TypeHello, "a1 01"), ErrMalformed},
		{"truncated text", msg(TypeHello, "a1 01 63 61 62"), ErrMalformed},
		{"duplicate key", msg(TypeHello, "a2 02 01 02 02"), ErrMalformed},
		{"unknown key", msg(TypeHello, "a1 03 01"), ErrMalformed},
		{"text key", msg(TypeHello, "a1 61 32 01"), ErrMalformed},
		{"negative key", msg(TypeHello, "a1 20 01"), ErrMalformed},
		{"indefinite map", msg(TypeHello, "bf 02 01 ff"), ErrMalformed},
		{"indefinite text", msg(TypeHello, "a1 01 7f 61 61 ff"), ErrMalformed},
		{"tag", msg(TypeHello, "c1 a0"), ErrMalformed},
		{"tagged value", msg(TypeHello, "a1 02 c1 01"), ErrMalformed},
		{"deep nesting", msg(TypeHello, "a1 05 81 81 81 81 81 81 01"), ErrMalformed},
		{"many pairs", msg(TypeHello, "b1"+strings.Repeat("0000", 17)), ErrMalformed},
		{"non-minimal integer", msg(TypeHello, "a1 02 18 01"), ErrMalformed},
		{"non-minimal key", msg(TypeHello, "a1 18 02 01"), ErrMalformed},
		{"unsorted keys", msg(TypeHello, "a2 02 01 01 61 78"), ErrMalformed},
		{"explicit zero", msg(TypeHello, "a1 02 00"), ErrMalformed},
		{"explicit empty text", msg(TypeHello, "a1 01 60"), ErrMalformed},
		{"null field", msg(TypeHello, "a1 01 f6"), ErrMalformed},
		{"wrong field type", msg(TypeHello, "a1 02 61 31"), ErrMalformed},
		{"negative for uint", msg(TypeHello, "a1 02 20"), ErrMalformed},
		{"float", msg(TypeHello, "a1 02 f9 3c 00"), ErrMalformed},
		{"invalid UTF-8", msg(TypeHello, "a1 01 62 c3 28"), ErrMalformed},
		{"unprintable text", msg(TypeHello, "a1 01 62 61 07"), ErrInvalid},
		{"software too long", msg(TypeHello, "a1 01 78 21"+strings.Repeat("61", 33)), ErrInvalid},
		{"counter over 32 bits", msg(TypeAuthResponse, "a4 01 5820"+strings.Repeat("00", 32)+" 02 1b 0000000100000000 03 01 04 48 0102030405060708"), ErrMalformed},
		{"card number bad Luhn", msg(TypeChallengeRequest, "a3 01 48 4111111111111112 02 48 0102030405060708 03 01"), ErrMalformed},
		{"card number not BCD", msg(TypeChallengeRequest, "a3 01 48 411111111111111f 02 48 0102030405060708 03 01"), ErrMalformed},
		{"card number as text", msg(TypeChallengeRequest, "a3 01 70 34313131313131313131313131313131 02 48 0102030405060708 03 01"), ErrMalformed},
		{"card number 7 bytes", msg(TypeChallengeRequest, "a3 01 47 41111111111111 02 48 0102030405060708 03 01"), ErrMalformed},
		{"no card number", msg(TypeChallengeRequest, "a2 02 48 0102030405060708 03 01"), ErrInvalid},
		{"cert id 7 bytes", msg(TypeChallengeRequest, "a3 01 48 4111111111111111 02 47 01020304050607 03 01"), ErrInvalid},
		{"purpose 5", msg(TypeChallengeRequest, "a3 01 48 4111111111111111 02 48 0102030405060708 03 05"), ErrInvalid},
		{"certificate not matching id", msg(TypeChallengeRequest, "a4 01 48 4111111111111111 02 48 0102030405060708 03 01 04 41 30"), ErrInvalid},
		{"challenge 31 bytes", msg(TypeChallenge, "a3 01 581f"+strings.Repeat("00", 31)+" 02 01 04 01"), ErrInvalid},
		{"ttl 0", msg(TypeChallenge, "a2 01 5820"+strings.Repeat("00", 32)+" 04 01"), ErrInvalid},
		{"no cvms", msg(TypeChallenge, "a2 01 5820"+strings.Repeat("00", 32)+" 02 01"), ErrInvalid},
		{"unknown cvm bit", msg(TypeChallenge, "a3 01 5820"+strings.Repeat("00", 32)+" 02 01 04 10"), ErrInvalid},
		{"context 65 bytes", msg(TypeChallenge, "a4 01 5820"+strings.Repeat("00", 32)+" 02 01 03 5841"+strings.Repeat("00", 65)+" 04 01"), ErrInvalid},
		{"counter 0", msg(TypeAuthResponse, "a2 01 5820"+strings.Repeat("00", 32)+" 04 48 0102030405060708"), ErrInvalid},
		{"cvm 4", msg(TypeAuthResponse, "a4 01 5820"+strings.Repeat("00", 32)+" 02 01 03 04 04 48 0102030405060708"), ErrInvalid},
		{"signature 7 bytes", msg(TypeAuthResponse, "a3 01 5820"+strings.Repeat("00", 32)+" 02 01 04 47 01020304050607"), ErrInvalid},
		{"pin block 15 bytes", msg(TypeAuthResponse, "a4 01 5820"+strings.Repeat("00", 32)+" 02 01 04 48 0102030405060708 05 4f"+strings.Repeat("00", 15)), ErrInvalid},
		{"error code 0", msg(TypeError, "a1 02 61 78"), ErrInvalid},
		{"result cvm 9", msg(TypeAuthResult, "a1 02 09"), ErrInvalid},
		{"empty transaction", msg(TypeTransactionOffer, "a1 02 01"), ErrInvalid},
		{"server keys none", msg(TypeServerKeys, "a0"), ErrInvalid},
		{"server keys empty array", msg(TypeServerKeys, "a1 01 80"), ErrInvalid},
		{"server key 31 bytes", msg(TypeServerKeys, "a1 01 81 581f"+strings.Repeat("00", 31)), ErrInvalid},
		{"server key 33 bytes", msg(TypeServerKeys, "a1 01 81 5821"+strings.Repeat("00", 33)), ErrInvalid},
		{"server key duplicate", msg(TypeServerKeys, "a1 01 82"+strings.Repeat(" 5820"+strings.Repeat("00", 32), 2)), ErrInvalid},
		{"server keys 9", msg(TypeServerKeys, "a1 01 89"+strings.Repeat(" 5820"+strings.Repeat("01", 32), 9)), ErrInvalid},
		{"server key as text", msg(TypeServerKeys, "a1 01 81 7820"+strings.Repeat("61", 32)), ErrMalformed},
		{"server keys indefinite array", msg(TypeServerKeys, "a1 01 9f 5820"+strings.Repeat("00", 32)+" ff"), ErrMalformed},
		{"offer ttl 0", msg(TypeTransactionOffer, "a2 01 41 e1 02 01"), ErrInvalid},
		{"offer request empty", msg(TypeOfferRequest, "a0"), ErrInvalid},
		{"offer request no cert id", msg(TypeOfferRequest, "a1 02 48 4111111111111111"), ErrInvalid},
		{"reference 7 digits", msg(TypeOfferRequest, "a3 01 67 31323334353637 02 48 4111111111111111 03 48 0102030405060708"), ErrInvalid},
		{"reference 9 digits", msg(TypeOfferRequest, "a3 01 69 313233343536373839 02 48 4111111111111111 03 48 0102030405060708"), ErrInvalid},
		{"reference not digits", msg(TypeOfferRequest, "a3 01 68 313233343536372a 02 48 4111111111111111 03 48 0102030405060708"), ErrInvalid},
		{"reference as bytes", msg(TypeOfferRequest, "a3 01 48 3132333435363738 02 48 4111111111111111 03 48 0102030405060708"), ErrMalformed},
		{"offer request card bad Luhn", msg(TypeOfferRequest, "a2 02 48 4111111111111112 03 48 0102030405060708"), ErrMalformed},
		{"offer request certificate not matching id", msg(TypeOfferRequest, "a3 02 48 4111111111111111 03 48 0102030405060708 04 41 30"), ErrInvalid},
		{"result no id", msg(TypeTransactionResult, "a0"), ErrInvalid},
		{"result id 15 bytes", msg(TypeTransactionResult, "a1 01 4f"+strings.Repeat("00", 15)), ErrInvalid},
		{"result cvm 4", msg(TypeTransactionResult, "a2 01 50"+strings.Repeat("00", 16)+" 03 04"), ErrInvalid},
		{"result tries over a byte", msg(TypeTransactionResult, "a3 01 50"+strings.Repeat("00", 16)+" 02 11 04 19 0100"), ErrMalformed},
		{"goods without ok", msg(TypeTransactionResult, "a3 01 50"+strings.Repeat("00", 16)+" 02 18 18 05 81 41 e6"), ErrInvalid},
		{"goods two", msg(TypeTransactionResult, "a2 01 50"+strings.Repeat("00", 16)+" 05 82 41 e6 41 e6"), ErrInvalid},
		{"good empty", msg(TypeTransactionResult, "a2 01 50"+strings.Repeat("00", 16)+" 05 81 40"), ErrInvalid},
		{"good too long", msg(TypeTransactionResult, "a2 01 50"+strings.Repeat("00", 16)+" 05 81 5904b1"+strings.Repeat("00", MaxGood+1)), ErrInvalid},
		{"goods empty array", msg(TypeTransactionResult, "a2 01 50"+strings.Repeat("00", 16)+" 05 80"), ErrMalformed},
		{"approval id 15 bytes", msg(TypeTransactionApproval, "a3 01 4f"+strings.Repeat("00", 15)+" 02 01 04 48 0102030405060708"), ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Decode(tc.in)
			if !errors.Is(err, tc.want) {
				t.Errorf("Decode(% x) = %+v, %v, want %v", tc.in, m, err, tc.want)
			}
		})
	}
}

// TestDecodeValidHandWritten checks the hand-written encodings the error
// cases above are built from: without their one defect they decode.
func TestDecodeValidHandWritten(t *testing.T) {
	tests := []struct {
		in   []byte
		want Message
	}{
		{msg(TypeHello, "a0"), &Hello{}},
		{msg(TypeHello, "a2 01 61 78 02 01"), &Hello{Software: "x", Features: 1}},
		{msg(TypeChallengeRequest, "a3 01 48 4111111111111111 02 48 0102030405060708 03 01"),
			&ChallengeRequest{CardNumber: card, CertID: []byte{1, 2, 3, 4, 5, 6, 7, 8}, Purpose: txn.PurposeAuth}},
		{msg(TypeChallenge, "a3 01 5820"+strings.Repeat("00", 32)+" 02 01 04 01"),
			&Challenge{Challenge: make([]byte, 32), TTL: 1, CVMs: CVMs(txn.CVMNone)}},
		{msg(TypeAuthResponse, "a3 01 5820"+strings.Repeat("00", 32)+" 02 01 04 48 0102030405060708"),
			&AuthResponse{Challenge: make([]byte, 32), Counter: 1, Signature: []byte{1, 2, 3, 4, 5, 6, 7, 8}}},
		{msg(TypeError, "a2 01 01 02 61 78"), &Error{Code: CodeInternal, Text: "x"}},
		{msg(TypeServerKeys, "a1 01 81 5820"+strings.Repeat("00", 32)), &ServerKeys{Keys: [][]byte{make([]byte, 32)}}},
		{msg(TypeTransactionOffer, "a3 01 41 e1 02 01 03 01"), &TransactionOffer{Transaction: []byte{0xe1}, CVMs: CVMs(txn.CVMNone), TTL: 1}},
		{msg(TypeOfferRequest, "a3 01 68 3132333435363738 02 48 4111111111111111 03 48 0102030405060708"),
			&OfferRequest{Reference: "12345678", CardNumber: card, CertID: []byte{1, 2, 3, 4, 5, 6, 7, 8}}},
		{msg(TypeOfferRequest, "a2 02 48 4111111111111111 03 48 0102030405060708"),
			&OfferRequest{CardNumber: card, CertID: []byte{1, 2, 3, 4, 5, 6, 7, 8}}},
		{msg(TypeTransactionResult, "a1 01 50"+strings.Repeat("00", 16)), &TransactionResult{ID: make([]byte, 16)}},
		{msg(TypeTransactionResult, "a3 01 50"+strings.Repeat("00", 16)+" 02 11 04 02"), &TransactionResult{ID: make([]byte, 16), Code: CodePINIncorrect, TriesLeft: 2}},
		{msg(TypeTransactionResult, "a2 01 50"+strings.Repeat("00", 16)+" 05 81 41 e6"), &TransactionResult{ID: make([]byte, 16), Goods: [][]byte{{0xe6}}}},
	}
	for _, tc := range tests {
		got, err := Decode(tc.in)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Decode(% x) = %+v, %v, want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestEncodeInvalid(t *testing.T) {
	tests := []struct {
		name string
		m    Message
	}{
		{"error code 0", &Error{Text: "x"}},
		{"error text too long", &Error{Code: 1, Text: strings.Repeat("x", MaxText+1)}},
		{"error text control", &Error{Code: 1, Text: "a\nb"}},
		{"card number short", &ChallengeRequest{CardNumber: "411111111111111", CertID: CertID(cert), Purpose: txn.PurposeAuth}},
		{"card number bad Luhn", &ChallengeRequest{CardNumber: "4111111111111112", CertID: CertID(cert), Purpose: txn.PurposeAuth}},
		{"no purpose", &ChallengeRequest{CardNumber: card, CertID: CertID(cert)}},
		{"certificate too long", &ChallengeRequest{CardNumber: card, CertID: CertID(seq(MaxCertificate+1, 0)), Purpose: txn.PurposeAuth, Certificate: seq(MaxCertificate+1, 0)}},
		{"certificate for another id", &ChallengeRequest{CardNumber: card, CertID: CertID(cert), Purpose: txn.PurposeAuth, Certificate: seq(10, 0)}},
		{"no challenge", &Challenge{TTL: 1, CVMs: 1}},
		{"context too long", &Challenge{Challenge: seq(32, 0), TTL: 1, Context: seq(MaxContext+1, 0), CVMs: 1}},
		{"signature too long", &AuthResponse{Challenge: seq(32, 0), Counter: 1, Signature: seq(MaxSignature+1, 0)}},
		{"biometric too long", &AuthResponse{Challenge: seq(32, 0), Counter: 1, Signature: seq(70, 0), Biometric: seq(MaxBiometric+1, 0)}},
		{"transaction too long", &TransactionOffer{Transaction: seq(MaxTransaction+1, 0), CVMs: 1}},
		{"approval no signature", &TransactionApproval{ID: seq(16, 0), Counter: 1}},
		{"offer no ttl", &TransactionOffer{Transaction: seq(10, 0), CVMs: 1}},
		{"offer request no card", &OfferRequest{CertID: CertID(cert)}},
		{"offer request reference short", &OfferRequest{Reference: "1234567", CardNumber: card, CertID: CertID(cert)}},
		{"offer request reference letters", &OfferRequest{Reference: "1234567a", CardNumber: card, CertID: CertID(cert)}},
		{"offer request certificate for another id", &OfferRequest{CardNumber: card, CertID: CertID(cert), Certificate: seq(10, 0)}},
		{"offer request paid with a reference", &OfferRequest{Reference: "12345674", CardNumber: card, CertID: CertID(cert), Paid: seq(TransactionIDLen, 1)}},
		{"offer request paid short", &OfferRequest{CardNumber: card, CertID: CertID(cert), Paid: seq(TransactionIDLen-1, 1)}},
		{"result no id", &TransactionResult{Code: CodeOK}},
		{"result cvm unknown", &TransactionResult{ID: seq(16, 0), CVM: 4}},
		{"result goods declined", &TransactionResult{ID: seq(16, 0), Code: CodeInsufficientFunds, Goods: [][]byte{{1}}}},
		{"result goods too many", &TransactionResult{ID: seq(16, 0), Goods: [][]byte{{1}, {2}}}},
		{"result good too long", &TransactionResult{ID: seq(16, 0), Goods: [][]byte{seq(MaxGood+1, 0)}}},
		{"purse kind 0", &PurseRequest{CardNumber: card, CertID: CertID(cert), Amount: 1, Currency: "EUR"}},
		{"purse kind 3", &PurseRequest{Kind: 3, CardNumber: card, CertID: CertID(cert), Amount: 1, Currency: "EUR"}},
		{"purse no card", &PurseRequest{Kind: 1, CertID: CertID(cert), Amount: 1, Currency: "EUR"}},
		{"purse amount 0", &PurseRequest{Kind: 1, CardNumber: card, CertID: CertID(cert), Currency: "EUR"}},
		{"purse amount over int64", &PurseRequest{Kind: 1, CardNumber: card, CertID: CertID(cert), Amount: 1 << 63, Currency: "EUR"}},
		{"purse balance over int64", &PurseRequest{Kind: 1, CardNumber: card, CertID: CertID(cert), Amount: 1, Balance: 1 << 63, Currency: "EUR"}},
		{"purse currency lower", &PurseRequest{Kind: 1, CardNumber: card, CertID: CertID(cert), Amount: 1, Currency: "eur"}},
		{"purse currency short", &PurseRequest{Kind: 1, CardNumber: card, CertID: CertID(cert), Amount: 1, Currency: "EU"}},
		{"purse seq exhausted", &PurseRequest{Kind: 1, CardNumber: card, CertID: CertID(cert), Amount: 1, Currency: "EUR", Seq: 1<<32 - 1}},
		{"purse load no id", &PurseLoad{Load: seq(10, 0)}},
		{"purse load too long", &PurseLoad{ID: seq(16, 0), Load: seq(MaxSignedLoad+1, 0)}},
		{"purse load empty", &PurseLoad{ID: seq(16, 0)}},
		{"load receipt counter 0", &LoadReceipt{ID: seq(16, 0), Signature: seq(70, 0)}},
		{"load receipt no signature", &LoadReceipt{ID: seq(16, 0), Counter: 1}},
		{"load receipt balance over int64", &LoadReceipt{ID: seq(16, 0), Counter: 1, Signature: seq(70, 0), Balance: 1 << 63}},
		{"no server keys", &ServerKeys{}},
		{"server key short", &ServerKeys{Keys: [][]byte{seq(31, 0)}}},
		{"server keys duplicate", &ServerKeys{Keys: [][]byte{seq(32, 0), seq(32, 0)}}},
		{"server keys too many", &ServerKeys{Keys: [][]byte{seq(32, 0), seq(32, 1), seq(32, 2), seq(32, 3), seq(32, 4), seq(32, 5), seq(32, 6), seq(32, 7), seq(32, 8)}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if b, err := Encode(tc.m); !errors.Is(err, ErrInvalid) {
				t.Errorf("Encode(%+v) = % x, %v, want ErrInvalid", tc.m, b, err)
			}
		})
	}
}

// TestCodeNumbers pins the wire numbers of the error codes: they are
// append-only and must never change.
func TestCodeNumbers(t *testing.T) {
	want := []struct {
		c    Code
		n    uint16
		text string
	}{
		{CodeOK, 0, "ok"},
		{CodeInternal, 1, "internal server error"},
		{CodeMalformed, 2, "malformed message"},
		{CodeUnsupportedVersion, 3, "unsupported protocol version"},
		{CodeUnexpectedMessage, 4, "unexpected message"},
		{CodeTooLarge, 5, "message too large"},
		{CodeBusy, 6, "server busy"},
		{CodeCertificateNeeded, 7, "card certificate needed"},
		{CodeCertificateInvalid, 8, "card certificate not valid"},
		{CodeCardUnknown, 9, "card unknown"},
		{CodeCardRevoked, 10, "card revoked"},
		{CodeDeviceRevoked, 11, "device revoked"},
		{CodeChallengeUnknown, 12, "challenge unknown or used"},
		{CodeChallengeExpired, 13, "challenge expired"},
		{CodeSignatureInvalid, 14, "card signature not valid"},
		{CodeCounterNotIncreasing, 15, "card counter did not increase"},
		{CodeCVMNotAccepted, 16, "verification method not accepted"},
		{CodePINIncorrect, 17, "PIN incorrect"},
		{CodePINBlocked, 18, "PIN blocked"},
		{CodeBiometricMismatch, 19, "biometric not matched"},
		{CodeTransactionUnknown, 20, "transaction unknown"},
		{CodeTransactionDeclined, 21, "transaction declined"},
		{CodeHolderDeclined, 22, "declined by card holder"},
		{CodeTransactionExpired, 23, "transaction expired"},
		{CodeInsufficientFunds, 24, "insufficient funds"},
		{CodePurseState, 25, "purse out of step with the server"},
	}
	for _, w := range want {
		if uint16(w.c) != w.n || w.c.String() != w.text {
			t.Errorf("code %q = %d %q, want %d %q (codes are append-only)", w.text, uint16(w.c), w.c.String(), w.n, w.text)
		}
	}
	if len(codeText) != len(want) {
		t.Errorf("%d codes known, %d pinned: pin the new codes here", len(codeText), len(want))
	}
	for c, s := range codeText {
		if s == "" {
			t.Errorf("Code(%d) has no text", c)
		}
	}
	if got := Code(500).String(); got != "Code(500)" {
		t.Errorf("Code(500).String() = %q, want \"Code(500)\"", got)
	}
}

// TestTypeNumbers pins the message type bytes.
func TestTypeNumbers(t *testing.T) {
	want := []struct {
		t    Type
		n    uint8
		name string
	}{
		{TypeError, 1, "Error"},
		{TypeHello, 2, "Hello"},
		{TypeChallengeRequest, 3, "ChallengeRequest"},
		{TypeChallenge, 4, "Challenge"},
		{TypeAuthResponse, 5, "AuthResponse"},
		{TypeAuthResult, 6, "AuthResult"},
		{TypeTransactionOffer, 7, "TransactionOffer"},
		{TypeTransactionApproval, 8, "TransactionApproval"},
		{TypeServerKeys, 9, "ServerKeys"},
		{TypeOfferRequest, 10, "OfferRequest"},
		{TypeTransactionResult, 11, "TransactionResult"},
		{TypePurseRequest, 12, "PurseRequest"},
		{TypePurseLoad, 13, "PurseLoad"},
		{TypeLoadReceipt, 14, "LoadReceipt"},
	}
	for _, w := range want {
		if uint8(w.t) != w.n || w.t.String() != w.name || newMessage(w.t).Type() != w.t {
			t.Errorf("type %s = %d %q, want %d %q", w.name, uint8(w.t), w.t.String(), w.n, w.name)
		}
	}
	if got := Type(0).String(); got != "Type(0)" {
		t.Errorf("Type(0).String() = %q, want \"Type(0)\"", got)
	}
}

func TestCodeFor(t *testing.T) {
	decodeErr := func(b []byte) error { _, err := Decode(b); return err }
	tests := []struct {
		name string
		err  error
		want Code
	}{
		{"nil", nil, CodeOK},
		{"too large", decodeErr(make([]byte, MaxSize+1)), CodeTooLarge},
		{"version", decodeErr([]byte{9, 2, 0xa0}), CodeUnsupportedVersion},
		{"type", decodeErr([]byte{Version, 99, 0xa0}), CodeUnexpectedMessage},
		{"malformed", decodeErr(msg(TypeHello, "ff")), CodeMalformed},
		{"invalid", decodeErr(msg(TypeError, "a0")), CodeMalformed},
		{"protocol error", &Error{Code: CodeCardRevoked}, CodeCardRevoked},
		{"wrapped protocol error", errors.Join(errors.New("x"), &Error{Code: CodeBusy}), CodeBusy},
		{"other", errors.New("disk full"), CodeInternal},
	}
	for _, tc := range tests {
		if got := CodeFor(tc.err); got != tc.want {
			t.Errorf("CodeFor(%s: %v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

func TestErrorText(t *testing.T) {
	tests := []struct {
		e    *Error
		want string
	}{
		{&Error{Code: CodeCardRevoked}, "server: card revoked (10)"},
		{&Error{Code: CodePINIncorrect, Text: "2 tries left"}, "server: PIN incorrect (17): 2 tries left"},
		{&Error{Code: 300}, "server: Code(300) (300)"},
	}
	for _, tc := range tests {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("%+v.Error() = %q, want %q", *tc.e, got, tc.want)
		}
	}
}

func TestCVMSet(t *testing.T) {
	s := CVMs(txn.CVMOfflinePIN, txn.CVMBiometric)
	for _, tc := range []struct {
		c    txn.CVM
		want bool
	}{{txn.CVMNone, false}, {txn.CVMOfflinePIN, true}, {txn.CVMOnlinePIN, false}, {txn.CVMBiometric, true}, {7, false}, {200, false}} {
		if got := s.Has(tc.c); got != tc.want {
			t.Errorf("CVMs(offline PIN, biometric).Has(%v) = %v, want %v", tc.c, got, tc.want)
		}
	}
}

func TestMaxSizeFitsChannel(t *testing.T) {
	if MaxSize > channel.MaxMessage {
		t.Errorf("MaxSize = %d, over channel.MaxMessage %d", MaxSize, channel.MaxMessage)
	}
}

// TestAuthExchangeBudget runs one authentication's messages through a real
// channel over an in-memory link and counts the bytes on the wire, both
// directions, handshake included. The goal is at most 600.
func TestAuthExchangeBudget(t *testing.T) {
	const budget = 600
	s := samples()
	exchange := []struct {
		fromDevice bool
		m          Message
	}{
		{true, s[1]},  // Hello
		{true, s[2]},  // ChallengeRequest, certificate by id
		{false, s[3]}, // Challenge with a 32-byte session binding
		{true, s[4]},  // AuthResponse with a 72-byte signature and an online PIN block
		{false, s[5]}, // AuthResult
	}
	dev, srv, devEnd, srvEnd := channelPair(t)
	hsDev, hsSrv := devEnd.Sent(), srvEnd.Sent()
	t.Logf("handshake: %d + %d bytes", hsDev, hsSrv)
	for _, e := range exchange {
		b, err := Encode(e.m)
		if err != nil {
			t.Fatal(err)
		}
		from, to, end := dev, srv, devEnd
		if !e.fromDevice {
			from, to, end = srv, dev, srvEnd
		}
		before := end.Sent()
		if err := from.WriteMessage(b); err != nil {
			t.Fatal(err)
		}
		got, err := to.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Decode(got); err != nil {
			t.Fatal(err)
		}
		t.Logf("%-16v %3d bytes encoded, %3d on the wire", e.m.Type(), len(b), end.Sent()-before)
	}
	total := devEnd.Sent() + srvEnd.Sent()
	t.Logf("total: device→server %d, server→device %d, both %d bytes (budget %d); at 1200 bit/s, 10 bits a byte: %v",
		devEnd.Sent(), srvEnd.Sent(), total, budget, devEnd.Airtime()+srvEnd.Airtime())
	if total > budget {
		t.Errorf("one authentication = %d bytes on the wire, want at most %d", total, budget)
	}

	// A device on an older server key during a rotation learns the keys
	// once, before the Challenge: one more server message.
	before := total
	rotated := total
	if b, err := Encode(s[len(s)-1]); err != nil {
		t.Fatal(err)
	} else {
		if err := srv.WriteMessage(b); err != nil {
			t.Fatal(err)
		}
		if _, err := dev.ReadMessage(); err != nil {
			t.Fatal(err)
		}
		rotated += devEnd.Sent() + srvEnd.Sent() - before
		t.Logf("%-16v %3d bytes encoded, %3d on the wire; with it one authentication = %d bytes", TypeServerKeys, len(b), devEnd.Sent()+srvEnd.Sent()-before, rotated)
	}
	if rotated > budget {
		t.Errorf("one authentication during a rotation (two server keys) = %d bytes on the wire, want at most %d", rotated, budget)
	}

	// First contact with a card the server does not know: one more round.
	before = devEnd.Sent() + srvEnd.Sent()
	for _, m := range []Message{&Error{Code: CodeCertificateNeeded}, &ChallengeRequest{CardNumber: card, CertID: CertID(cert), Purpose: txn.PurposeAuth, Certificate: cert}} {
		b, _ := Encode(m)
		from, to := srv, dev
		if m.Type() == TypeChallengeRequest {
			from, to = dev, srv
		}
		from.WriteMessage(b)
		to.ReadMessage()
	}
	t.Logf("first contact with a %d-byte certificate adds %d bytes", len(cert), devEnd.Sent()+srvEnd.Sent()-before)
}

// channelPair is an established channel over a 1200 bit/s linktest pipe.
func channelPair(t *testing.T) (dev, srv *channel.Conn, devEnd, srvEnd *linktest.End) {
	t.Helper()
	devKey, err := channel.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	srvKey, err := channel.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	devEnd, srvEnd = linktest.Pipe(linktest.Config{BitsPerSecond: 1200})
	ctx := context.Background()
	errc := make(chan error, 1)
	go func() {
		var err error
		srv, err = channel.Accept(ctx, srvEnd, channel.ServerConfig{Keys: []noise.DHKey{srvKey}, Authorize: func([]byte) error { return nil }})
		errc <- err
	}()
	dev, err = channel.Dial(ctx, devEnd, channel.Config{Static: devKey, ServerPub: srvKey.Public})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return dev, srv, devEnd, srvEnd
}
