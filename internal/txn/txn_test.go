package txn

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/hex"
	"flag"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cardlink/internal/iso7816"
	"cardlink/internal/money"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

const card = "4111111111111111" // Luhn-valid

func sampleTransaction() Transaction {
	return Transaction{
		ID:       [16]byte{0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF, 0xFE, 0xDC, 0xBA, 0x98, 0x76, 0x54, 0x32, 0x10},
		Merchant: "Café Zürich",
		Item:     "2 × espresso",
		Amount:   money.Amount{Minor: 740, Currency: "CHF"},
		Time:     time.Date(2026, 11, 28, 17, 0, 0, 0, time.UTC),
		Nonce:    []byte("0123456789abcdef"),
	}
}

func sampleEnvelope() Envelope {
	t := sampleTransaction()
	b, err := t.Encode()
	if err != nil {
		panic(err)
	}
	return Envelope{Purpose: PurposeTransaction, CardNumber: card, Counter: 42, CVM: CVMOfflinePIN, Payload: b}
}

func sampleLoad() Load {
	return Load{CardNumber: card, Seq: 7, Amount: money.Amount{Minor: 5000, Currency: "EUR"}}
}

func sampleItem() Item {
	return Item{CardNumber: card, ID: [16]byte{15: 1}, Kind: ItemTicket, Title: "Zone 1–2 day ticket", Content: []byte("TICKET-0001")}
}

// fakeSig is a canonical DER ECDSA signature (r = 1, s = 2^255+1) that no key
// made; it serves where only the encoding matters.
var fakeSig = func() []byte {
	s := new(big.Int).Lsh(big.NewInt(1), 255)
	s.Add(s, big.NewInt(1))
	b, err := asn1.Marshal(struct{ R, S *big.Int }{big.NewInt(1), s})
	if err != nil {
		panic(err)
	}
	return b
}()

// tlv builds a template from already encoded fields.
func tlv(tag iso7816.Tag, fields ...[]byte) []byte {
	return iso7816.AppendTLV(nil, tag, bytes.Join(fields, nil))
}

func f(tag iso7816.Tag, v []byte) []byte { return iso7816.AppendTLV(nil, tag, v) }

func u64(v uint64) []byte {
	return []byte{byte(v >> 56), byte(v >> 48), byte(v >> 40), byte(v >> 32), byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
}

// txnFields returns the seven encoded fields of the sample transaction, to
// be altered by refusal cases.
func txnFields() [][]byte {
	t := sampleTransaction()
	return [][]byte{
		f(0x80, t.ID[:]),
		f(0x81, []byte(t.Merchant)),
		f(0x82, []byte(t.Item)),
		f(0x83, u64(740)),
		f(0x84, []byte("CHF")),
		f(0x85, u64(uint64(t.Time.Unix()))),
		f(0x86, t.Nonce),
	}
}

func with(fields [][]byte, i int, v []byte) [][]byte {
	out := append([][]byte(nil), fields...)
	out[i] = v
	return out
}

func TestTransactionRoundTrip(t *testing.T) {
	tx := sampleTransaction()
	b, err := tx.Encode()
	if err != nil {
		t.Fatalf("Encode() error: %v", err)
	}
	if want := tlv(0xE1, txnFields()...); !bytes.Equal(b, want) {
		t.Fatalf("Encode() = %X, want %X", b, want)
	}
	got, err := Parse(b)
	if err != nil {
		t.Fatalf("Parse(%X) error: %v", b, err)
	}
	if got.ID != tx.ID || got.Merchant != tx.Merchant || got.Item != tx.Item || got.Amount != tx.Amount ||
		!got.Time.Equal(tx.Time) || got.Time.Location() != time.UTC || !bytes.Equal(got.Nonce, tx.Nonce) {
		t.Errorf("Parse(Encode(%+v)) = %+v", tx, got)
	}
	// The parsed nonce must not alias the input.
	b[len(b)-1] ^= 0xFF
	if !bytes.Equal(got.Nonce, tx.Nonce) {
		t.Errorf("Parse result aliases its input")
	}
}

func TestTransactionValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Transaction)
		want   string // substring of the error; "" means valid
	}{
		{"valid", func(*Transaction) {}, ""},
		{"merchant 40 bytes", func(t *Transaction) { t.Merchant = strings.Repeat("m", 40) }, ""},
		{"item 64 bytes", func(t *Transaction) { t.Item = strings.Repeat("i", 64) }, ""},
		{"nonce 32 bytes", func(t *Transaction) { t.Nonce = make([]byte, 32) }, ""},
		{"time zone other than UTC", func(t *Transaction) { t.Time = t.Time.In(time.FixedZone("X", 3600)) }, ""},
		{"epoch", func(t *Transaction) { t.Time = time.Unix(0, 0) }, ""},
		{"empty merchant", func(t *Transaction) { t.Merchant = "" }, "merchant"},
		{"merchant 41 bytes", func(t *Transaction) { t.Merchant = strings.Repeat("m", 41) }, "merchant"},
		{"merchant bad UTF-8", func(t *Transaction) { t.Merchant = "Caf\xE9" }, "merchant: not valid UTF-8"},
		{"merchant control character", func(t *Transaction) { t.Merchant = "Shop\n" }, "merchant: unprintable"},
		{"merchant bidi override", func(t *Transaction) { t.Merchant = "Shop\u202Eevil" }, "merchant: unprintable"},
		{"merchant DEL", func(t *Transaction) { t.Merchant = "Shop\x7F" }, "merchant: unprintable"},
		{"empty item", func(t *Transaction) { t.Item = "" }, "item"},
		{"item 65 bytes", func(t *Transaction) { t.Item = strings.Repeat("i", 65) }, "item"},
		{"item tab", func(t *Transaction) { t.Item = "a\tb" }, "item: unprintable"},
		{"zero amount", func(t *Transaction) { t.Amount.Minor = 0 }, "amount"},
		{"negative amount", func(t *Transaction) { t.Amount.Minor = -1 }, "amount"},
		{"unknown currency", func(t *Transaction) { t.Amount.Currency = "XYZ" }, "amount"},
		{"lower-case currency", func(t *Transaction) { t.Amount.Currency = "chf" }, "amount"},
		{"fractional second", func(t *Transaction) { t.Time = t.Time.Add(time.Millisecond) }, "time"},
		{"zero time", func(t *Transaction) { t.Time = time.Time{} }, "time"},
		{"year 10000", func(t *Transaction) { t.Time = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, "time"},
		{"nonce 15 bytes", func(t *Transaction) { t.Nonce = make([]byte, 15) }, "nonce"},
		{"nonce 33 bytes", func(t *Transaction) { t.Nonce = make([]byte, 33) }, "nonce"},
		{"nil nonce", func(t *Transaction) { t.Nonce = nil }, "nonce"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tx := sampleTransaction()
			tt.change(&tx)
			err := tx.Validate()
			b, encErr := tx.Encode()
			if tt.want == "" {
				if err != nil || encErr != nil {
					t.Fatalf("Validate() = %v, Encode() error %v, want nil", err, encErr)
				}
				if _, err := Parse(b); err != nil {
					t.Errorf("Parse(Encode()) error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() = %v, want error containing %q", err, tt.want)
			}
			if encErr == nil {
				t.Errorf("Encode() = %X, want error", b)
			}
		})
	}
}

func TestParseRefusals(t *testing.T) {
	fs := txnFields()
	valid := tlv(0xE1, fs...)
	longLen := append([]byte{0xE1, 0x81}, valid[1:]...) // length in long form though < 128
	if valid[1] >= 0x80 {
		t.Fatalf("sample transaction is %d bytes; the long-length case needs a short one", len(valid))
	}
	tests := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"template only", []byte{0xE1, 0x00}},
		{"wrong template tag", tlv(0xE2, fs...)},
		{"non-minimal template length", longLen},
		{"non-minimal field length", tlv(0xE1, with(fs, 1, append([]byte{0x81, 0x81, byte(len("Café Zürich"))}, "Café Zürich"...))...)},
		{"indefinite length", append(append([]byte{0xE1, 0x80}, bytes.Join(fs, nil)...), 0, 0)},
		{"truncated", valid[:len(valid)-1]},
		{"trailing byte", append(bytes.Clone(valid), 0x00)},
		{"two templates", append(bytes.Clone(valid), valid...)},
		{"wrong order", tlv(0xE1, fs[0], fs[2], fs[1], fs[3], fs[4], fs[5], fs[6])},
		{"duplicate field", tlv(0xE1, fs[0], fs[1], fs[1], fs[2], fs[3], fs[4], fs[5], fs[6])},
		{"missing field", tlv(0xE1, fs[0], fs[1], fs[2], fs[3], fs[4], fs[5])},
		{"extra field", tlv(0xE1, append(fs[:7:7], f(0x87, []byte{0}))...)},
		{"constructed field", tlv(0xE1, with(fs, 0, f(0xA0, f(0x80, make([]byte, 16))))...)},
		{"id 15 bytes", tlv(0xE1, with(fs, 0, f(0x80, make([]byte, 15)))...)},
		{"empty merchant", tlv(0xE1, with(fs, 1, f(0x81, nil))...)},
		{"merchant bad UTF-8", tlv(0xE1, with(fs, 1, f(0x81, []byte("Caf\xE9")))...)},
		{"merchant control character", tlv(0xE1, with(fs, 1, f(0x81, []byte("Caf\x00")))...)},
		{"item 65 bytes", tlv(0xE1, with(fs, 2, f(0x82, bytes.Repeat([]byte("i"), 65)))...)},
		{"zero amount", tlv(0xE1, with(fs, 3, f(0x83, u64(0)))...)},
		{"negative amount", tlv(0xE1, with(fs, 3, f(0x83, u64(1<<63)))...)},
		{"minimal amount instead of 8 bytes", tlv(0xE1, with(fs, 3, f(0x83, []byte{0x02, 0xE4}))...)},
		{"amount 9 bytes", tlv(0xE1, with(fs, 3, f(0x83, append([]byte{0}, u64(740)...)))...)},
		{"unknown currency", tlv(0xE1, with(fs, 4, f(0x84, []byte("XYZ")))...)},
		{"lower-case currency", tlv(0xE1, with(fs, 4, f(0x84, []byte("chf")))...)},
		{"numeric currency", tlv(0xE1, with(fs, 4, f(0x84, []byte{0x07, 0x56}))...)},
		{"time 4 bytes", tlv(0xE1, with(fs, 5, f(0x85, []byte{0x69, 0x29, 0xD4, 0x30}))...)},
		{"time after 9999", tlv(0xE1, with(fs, 5, f(0x85, u64(253402300800)))...)},
		{"time negative", tlv(0xE1, with(fs, 5, f(0x85, u64(1<<63)))...)},
		{"nonce 15 bytes", tlv(0xE1, with(fs, 6, f(0x86, make([]byte, 15)))...)},
		{"nonce 33 bytes", tlv(0xE1, with(fs, 6, f(0x86, make([]byte, 33)))...)},
		{"too long", append(bytes.Clone(valid), make([]byte, maxInput)...)},
	}
	if _, err := Parse(valid); err != nil {
		t.Fatalf("Parse(valid) error: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := Parse(tt.in); err == nil {
				t.Errorf("Parse(%X) = %+v, want error", tt.in, got)
			} else if !strings.HasPrefix(err.Error(), "parsing transaction: ") {
				t.Errorf("Parse(%X) error %q, want prefix %q", tt.in, err, "parsing transaction: ")
			}
		})
	}
}

func envFields() [][]byte {
	e := sampleEnvelope()
	return [][]byte{
		f(0x80, []byte{2}),
		f(0x81, []byte{0x41, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11}),
		f(0x82, []byte{0, 0, 0, 42}),
		f(0x83, []byte{1}),
		f(0x84, e.Payload),
	}
}

func TestEnvelopeRoundTrip(t *testing.T) {
	e := sampleEnvelope()
	b := e.Bytes()
	want := append([]byte("cardlink/sig/v1"), tlv(0xE2, envFields()...)...)
	if !bytes.Equal(b, want) {
		t.Fatalf("Bytes() = %X, want %X", b, want)
	}
	got, err := ParseEnvelope(b)
	if err != nil {
		t.Fatalf("ParseEnvelope(%X) error: %v", b, err)
	}
	if got.Purpose != e.Purpose || got.CardNumber != e.CardNumber || got.Counter != e.Counter || got.CVM != e.CVM || !bytes.Equal(got.Payload, e.Payload) {
		t.Errorf("ParseEnvelope(Bytes()) = %+v, want %+v", got, e)
	}
}

func TestEnvelopeRefusals(t *testing.T) {
	fs := envFields()
	pre := []byte("cardlink/sig/v1")
	env := func(fields ...[]byte) []byte { return append(bytes.Clone(pre), tlv(0xE2, fields...)...) }
	tests := []struct {
		name string
		in   []byte
	}{
		{"no prefix", tlv(0xE2, fs...)},
		{"load prefix", append([]byte("cardlink/load/v1"), tlv(0xE2, fs...)...)},
		{"prefix only", pre},
		{"wrong template tag", append(bytes.Clone(pre), tlv(0xE1, fs...)...)},
		{"trailing byte", append(env(fs...), 0)},
		{"wrong order", env(fs[1], fs[0], fs[2], fs[3], fs[4])},
		{"duplicate field", env(fs[0], fs[0], fs[1], fs[2], fs[3], fs[4])},
		{"extra field", env(append(fs[:5:5], f(0x85, nil))...)},
		{"missing payload", env(fs[:4]...)},
		{"purpose 0", env(with(fs, 0, f(0x80, []byte{0}))...)},
		{"purpose 5", env(with(fs, 0, f(0x80, []byte{5}))...)},
		{"purpose 2 bytes", env(with(fs, 0, f(0x80, []byte{0, 2}))...)},
		{"card number bad Luhn", env(with(fs, 1, f(0x81, []byte{0x41, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x12}))...)},
		{"card number F padding", env(with(fs, 1, f(0x81, []byte{0x41, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1F}))...)},
		{"card number 7 bytes", env(with(fs, 1, f(0x81, []byte{0x41, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11}))...)},
		{"card number ASCII", env(with(fs, 1, f(0x81, []byte(card)))...)},
		{"counter 3 bytes", env(with(fs, 2, f(0x82, []byte{0, 0, 42}))...)},
		{"counter 5 bytes", env(with(fs, 2, f(0x82, []byte{0, 0, 0, 0, 42}))...)},
		{"cvm 4", env(with(fs, 3, f(0x83, []byte{4}))...)},
		{"empty payload", env(with(fs, 4, f(0x84, nil))...)},
		{"payload 1025 bytes", env(with(fs, 4, f(0x84, make([]byte, 1025)))...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := ParseEnvelope(tt.in); err == nil {
				t.Errorf("ParseEnvelope(%X) = %+v, want error", tt.in, got)
			}
		})
	}
}

func TestEnvelopeValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Envelope)
		valid  bool
	}{
		{"valid", func(*Envelope) {}, true},
		{"counter 0", func(e *Envelope) { e.Counter = 0 }, true},
		{"counter max", func(e *Envelope) { e.Counter = 1<<32 - 1 }, true},
		{"payload 1024", func(e *Envelope) { e.Payload = make([]byte, 1024) }, true},
		{"cvm none", func(e *Envelope) { e.CVM = CVMNone }, true},
		{"auth", func(e *Envelope) { e.Purpose = PurposeAuth }, true},
		{"purpose 0", func(e *Envelope) { e.Purpose = 0 }, false},
		{"cvm 4", func(e *Envelope) { e.CVM = 4 }, false},
		{"card 15 digits", func(e *Envelope) { e.CardNumber = card[:15] }, false},
		{"card bad Luhn", func(e *Envelope) { e.CardNumber = "4111111111111112" }, false},
		{"payload empty", func(e *Envelope) { e.Payload = nil }, false},
		{"payload 1025", func(e *Envelope) { e.Payload = make([]byte, 1025) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := sampleEnvelope()
			tt.change(&e)
			err := e.Validate()
			if (err == nil) != tt.valid {
				t.Fatalf("Validate() = %v, want valid %v", err, tt.valid)
			}
			_, perr := ParseEnvelope(e.Bytes())
			if (perr == nil) != tt.valid {
				t.Errorf("ParseEnvelope(Bytes()) error = %v, want valid %v", perr, tt.valid)
			}
		})
	}
}

func TestLoadRoundTrip(t *testing.T) {
	l := sampleLoad()
	wantTmpl := tlv(0xE3,
		f(0x80, []byte{0x41, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11}),
		f(0x81, []byte{0, 0, 0, 7}),
		f(0x82, u64(5000)),
		f(0x83, []byte("EUR")))
	if got, want := l.Bytes(), append([]byte("cardlink/load/v1"), wantTmpl...); !bytes.Equal(got, want) {
		t.Fatalf("Bytes() = %X, want %X", got, want)
	}
	b := l.EncodeSigned(fakeSig)
	if want := tlv(0xE5, wantTmpl, f(0x9E, fakeSig)); !bytes.Equal(b, want) {
		t.Fatalf("EncodeSigned() = %X, want %X", b, want)
	}
	got, sig, err := ParseSignedLoad(b)
	if err != nil {
		t.Fatalf("ParseSignedLoad(%X) error: %v", b, err)
	}
	if got != l || !bytes.Equal(sig, fakeSig) {
		t.Errorf("ParseSignedLoad(EncodeSigned()) = %+v, %X, want %+v, %X", got, sig, l, fakeSig)
	}
}

func TestSignedLoadRefusals(t *testing.T) {
	l, it := sampleLoad(), sampleItem()
	tmpl := l.appendTemplate(nil)
	lf := [][]byte{
		f(0x80, CardNumberBCD(card)),
		f(0x81, []byte{0, 0, 0, 7}),
		f(0x82, u64(5000)),
		f(0x83, []byte("EUR")),
	}
	signed := func(fields ...[]byte) []byte { return tlv(0xE5, tlv(0xE3, fields...), f(0x9E, fakeSig)) }
	tests := []struct {
		name string
		in   []byte
	}{
		{"unsigned template", tmpl},
		{"with prefix", append([]byte("cardlink/load/v1"), tlv(0xE5, tmpl, f(0x9E, fakeSig))...)},
		{"no signature", tlv(0xE5, tmpl)},
		{"signature first", tlv(0xE5, f(0x9E, fakeSig), tmpl)},
		{"two signatures", tlv(0xE5, tmpl, f(0x9E, fakeSig), f(0x9E, fakeSig))},
		{"item template", tlv(0xE5, it.appendTemplate(nil), f(0x9E, fakeSig))},
		{"signed item tag", tlv(0xE6, tmpl, f(0x9E, fakeSig))},
		{"empty signature", tlv(0xE5, tmpl, f(0x9E, nil))},
		{"signature 81 bytes", tlv(0xE5, tmpl, f(0x9E, append(bytes.Clone(fakeSig), make([]byte, 81-len(fakeSig))...)))},
		{"signature not DER", tlv(0xE5, tmpl, f(0x9E, bytes.Repeat([]byte{0xAB}, 70)))},
		{"signature trailing byte", tlv(0xE5, tmpl, f(0x9E, append(bytes.Clone(fakeSig), 0)))},
		{"signature non-minimal integer", tlv(0xE5, tmpl, f(0x9E, []byte{0x30, 0x07, 0x02, 0x02, 0x00, 0x01, 0x02, 0x01, 0x01}))},
		{"signature zero r", tlv(0xE5, tmpl, f(0x9E, []byte{0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x01}))},
		{"signature negative s", tlv(0xE5, tmpl, f(0x9E, []byte{0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0xFF}))},
		{"wrong order", signed(lf[1], lf[0], lf[2], lf[3])},
		{"duplicate field", signed(lf[0], lf[0], lf[1], lf[2], lf[3])},
		{"extra field", signed(append(lf[:4:4], f(0x84, nil))...)},
		{"bad card number", signed(with(lf, 0, f(0x80, CardNumberBCD("4111111111111112")))...)},
		{"seq 0", signed(with(lf, 1, f(0x81, []byte{0, 0, 0, 0}))...)},
		{"seq 2 bytes", signed(with(lf, 1, f(0x81, []byte{0, 7}))...)},
		{"zero amount", signed(with(lf, 2, f(0x82, u64(0)))...)},
		{"negative amount", signed(with(lf, 2, f(0x82, u64(1<<64-5000)))...)},
		{"bad currency", signed(with(lf, 3, f(0x83, []byte("EU")))...)},
		{"trailing byte", append(l.EncodeSigned(fakeSig), 0)},
	}
	if _, _, err := ParseSignedLoad(signed(lf...)); err != nil {
		t.Fatalf("ParseSignedLoad(valid) error: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, sig, err := ParseSignedLoad(tt.in); err == nil {
				t.Errorf("ParseSignedLoad(%X) = %+v, %X, want error", tt.in, got, sig)
			}
		})
	}
}

func TestLoadValidate(t *testing.T) {
	tests := []struct {
		name string
		l    Load
		want string
	}{
		{"valid", sampleLoad(), ""},
		{"yen", Load{CardNumber: card, Seq: 1, Amount: money.Amount{Minor: 1, Currency: "JPY"}}, ""},
		{"bad card", Load{CardNumber: "1234", Seq: 1, Amount: money.Amount{Minor: 1, Currency: "EUR"}}, "card number"},
		{"seq 0", Load{CardNumber: card, Seq: 0, Amount: money.Amount{Minor: 1, Currency: "EUR"}}, "seq"},
		{"zero amount", Load{CardNumber: card, Seq: 1, Amount: money.Amount{Minor: 0, Currency: "EUR"}}, "amount"},
		{"negative amount", Load{CardNumber: card, Seq: 1, Amount: money.Amount{Minor: -1, Currency: "EUR"}}, "amount"},
		{"no currency", Load{CardNumber: card, Seq: 1, Amount: money.Amount{Minor: 1}}, "amount"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.l.Validate()
			if tt.want == "" {
				if err != nil {
					t.Errorf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() = %v, want error containing %q", err, tt.want)
			}
			if _, _, err := ParseSignedLoad(tt.l.EncodeSigned(fakeSig)); err == nil {
				t.Errorf("ParseSignedLoad(EncodeSigned()) error = nil, want error")
			}
		})
	}
}

func TestItemRoundTrip(t *testing.T) {
	for _, content := range [][]byte{nil, []byte("TICKET-0001"), make([]byte, 1024)} {
		it := sampleItem()
		it.Content = content
		wantTmpl := tlv(0xE4,
			f(0x80, CardNumberBCD(card)),
			f(0x81, it.ID[:]),
			f(0x82, []byte{2}),
			f(0x83, []byte(it.Title)),
			f(0x84, content))
		if got, want := it.Bytes(), append([]byte("cardlink/item/v1"), wantTmpl...); !bytes.Equal(got, want) {
			t.Fatalf("Bytes() = %X, want %X", got, want)
		}
		b := it.EncodeSigned(fakeSig)
		if want := tlv(0xE6, wantTmpl, f(0x9E, fakeSig)); !bytes.Equal(b, want) {
			t.Fatalf("EncodeSigned() = %X, want %X", b, want)
		}
		got, sig, err := ParseSignedItem(b)
		if err != nil {
			t.Fatalf("ParseSignedItem(%X) error: %v", b, err)
		}
		if got.CardNumber != it.CardNumber || got.ID != it.ID || got.Kind != it.Kind || got.Title != it.Title ||
			!bytes.Equal(got.Content, it.Content) || !bytes.Equal(sig, fakeSig) {
			t.Errorf("ParseSignedItem(EncodeSigned()) = %+v, %X, want %+v, %X", got, sig, it, fakeSig)
		}
	}
}

func TestSignedItemRefusals(t *testing.T) {
	it, l := sampleItem(), sampleLoad()
	inf := [][]byte{
		f(0x80, CardNumberBCD(card)),
		f(0x81, it.ID[:]),
		f(0x82, []byte{2}),
		f(0x83, []byte(it.Title)),
		f(0x84, it.Content),
	}
	signed := func(fields ...[]byte) []byte { return tlv(0xE6, tlv(0xE4, fields...), f(0x9E, fakeSig)) }
	tests := []struct {
		name string
		in   []byte
	}{
		{"load inside", tlv(0xE6, l.appendTemplate(nil), f(0x9E, fakeSig))},
		{"no signature", tlv(0xE6, tlv(0xE4, inf...))},
		{"wrong order", signed(inf[0], inf[2], inf[1], inf[3], inf[4])},
		{"duplicate field", signed(inf[0], inf[1], inf[2], inf[3], inf[3], inf[4])},
		{"extra field", signed(append(inf[:5:5], f(0x85, nil))...)},
		{"missing content", signed(inf[:4]...)},
		{"bad card number", signed(with(inf, 0, f(0x80, []byte{0x41, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0xA1}))...)},
		{"id 17 bytes", signed(with(inf, 1, f(0x81, make([]byte, 17)))...)},
		{"kind 0", signed(with(inf, 2, f(0x82, []byte{0}))...)},
		{"kind 5", signed(with(inf, 2, f(0x82, []byte{5}))...)},
		{"empty title", signed(with(inf, 3, f(0x83, nil))...)},
		{"title 41 bytes", signed(with(inf, 3, f(0x83, bytes.Repeat([]byte("t"), 41)))...)},
		{"title bad UTF-8", signed(with(inf, 3, f(0x83, []byte{0xFF, 0xFE}))...)},
		{"title escape", signed(with(inf, 3, f(0x83, []byte("\x1b[2J")))...)},
		{"content 1025 bytes", signed(with(inf, 4, f(0x84, make([]byte, 1025)))...)},
		{"bad signature", tlv(0xE6, tlv(0xE4, inf...), f(0x9E, []byte("not a signature")))},
	}
	if _, _, err := ParseSignedItem(signed(inf...)); err != nil {
		t.Fatalf("ParseSignedItem(valid) error: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, sig, err := ParseSignedItem(tt.in); err == nil {
				t.Errorf("ParseSignedItem(%X) = %+v, %X, want error", tt.in, got, sig)
			}
		})
	}
}

func TestCardNumber(t *testing.T) {
	tests := []struct {
		in    string
		valid bool
	}{
		{"4111111111111111", true},
		{"5555555555554444", true},
		{"0000000000000000", true},
		{"4111111111111112", false},
		{"411111111111111", false},
		{"41111111111111111", false},
		{"4111 11111111111", false},
		{"411111111111111a", false},
		{"", false},
		{"4111111111111111\x00", false},
	}
	for _, tt := range tests {
		err := ValidCardNumber(tt.in)
		if (err == nil) != tt.valid {
			t.Errorf("ValidCardNumber(%q) = %v, want valid %v", tt.in, err, tt.valid)
		}
		if !tt.valid {
			continue
		}
		b := CardNumberBCD(tt.in)
		if want, _ := hex.DecodeString(tt.in); !bytes.Equal(b, want) {
			t.Errorf("CardNumberBCD(%q) = %X, want %X", tt.in, b, want)
		}
		if got, err := ParseCardNumberBCD(b); err != nil || got != tt.in {
			t.Errorf("ParseCardNumberBCD(%X) = %q, %v, want %q", b, got, err, tt.in)
		}
	}
	for _, in := range []string{"", "123", "411111111111111a", "41111111111111111"} {
		if b := CardNumberBCD(in); b != nil {
			t.Errorf("CardNumberBCD(%q) = %X, want nil", in, b)
		}
	}
	for _, in := range []string{"", "4111111111111111", "411111111111111F", "4111111111111112", "41111111111111", "A111111111111111"} {
		b, _ := hex.DecodeString(in)
		if in == "4111111111111111" {
			b = []byte(in) // ASCII, not BCD
		}
		if got, err := ParseCardNumberBCD(b); err == nil {
			t.Errorf("ParseCardNumberBCD(%X) = %q, want error", b, got)
		}
	}
}

func TestStrings(t *testing.T) {
	tests := []struct {
		got, want string
	}{
		{CVMNone.String(), "none"},
		{CVMOfflinePIN.String(), "offline PIN"},
		{CVMOnlinePIN.String(), "online PIN"},
		{CVMBiometric.String(), "biometric"},
		{CVM(9).String(), "CVM(9)"},
		{PurposeAuth.String(), "auth"},
		{PurposeTransaction.String(), "transaction"},
		{PurposePurseDebit.String(), "purse debit"},
		{PurposeLoadReceipt.String(), "load receipt"},
		{Purpose(0).String(), "Purpose(0)"},
		{ItemVoucher.String(), "voucher"},
		{ItemTicket.String(), "ticket"},
		{ItemLicence.String(), "licence"},
		{ItemFile.String(), "file"},
		{ItemKind(7).String(), "ItemKind(7)"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("String() = %q, want %q", tt.got, tt.want)
		}
	}
}

func sign(t *testing.T, key *ecdsa.PrivateKey, msg []byte) []byte {
	t.Helper()
	h := sha256.Sum256(msg)
	sig, err := ecdsa.SignASN1(rand.Reader, key, h[:])
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

func TestVerify(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	e, l, it := sampleEnvelope(), sampleLoad(), sampleItem()
	eSig, lSig, iSig := sign(t, key, e.Bytes()), sign(t, key, l.Bytes()), sign(t, key, it.Bytes())

	// A signature whose message is the bare template (no prefix) must not
	// verify either.
	bareLoad := sign(t, key, l.appendTemplate(nil))

	changedE := sampleEnvelope()
	changedE.Counter++
	authE := sampleEnvelope()
	authE.Purpose = PurposeAuth
	changedL := sampleLoad()
	changedL.Amount.Minor++
	changedI := sampleItem()
	changedI.Content = []byte("TICKET-0002")
	invalidE := sampleEnvelope()
	invalidE.Payload = nil
	p384Sig := sign(t, p384, e.Bytes())

	tests := []struct {
		name string
		got  bool
		want bool
	}{
		{"envelope", VerifyEnvelope(&key.PublicKey, &e, eSig), true},
		{"load", VerifyLoad(&key.PublicKey, &l, lSig), true},
		{"item", VerifyItem(&key.PublicKey, &it, iSig), true},
		{"envelope other key", VerifyEnvelope(&other.PublicKey, &e, eSig), false},
		{"load other key", VerifyLoad(&other.PublicKey, &l, lSig), false},
		{"item other key", VerifyItem(&other.PublicKey, &it, iSig), false},
		{"envelope changed counter", VerifyEnvelope(&key.PublicKey, &changedE, eSig), false},
		{"envelope changed purpose", VerifyEnvelope(&key.PublicKey, &authE, eSig), false},
		{"load changed amount", VerifyLoad(&key.PublicKey, &changedL, lSig), false},
		{"item changed content", VerifyItem(&key.PublicKey, &changedI, iSig), false},
		{"load bare template", VerifyLoad(&key.PublicKey, &l, bareLoad), false},
		{"invalid envelope", VerifyEnvelope(&key.PublicKey, &invalidE, sign(t, key, invalidE.Bytes())), false},
		{"P-384 key", VerifyEnvelope(&p384.PublicKey, &e, p384Sig), false},
		{"nil key", VerifyEnvelope(nil, &e, eSig), false},
		{"garbage signature", VerifyEnvelope(&key.PublicKey, &e, []byte{0x30, 0x00}), false},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("Verify %s = %v, want %v", tt.name, tt.got, tt.want)
		}
	}
}

// TestDomainSeparation checks that no structure's signed bytes are a valid
// encoding of another structure, whatever their contents.
func TestDomainSeparation(t *testing.T) {
	e, l, it := sampleEnvelope(), sampleLoad(), sampleItem()
	tx := sampleTransaction()
	txb, _ := tx.Encode()
	all := map[string][]byte{"envelope": e.Bytes(), "load": l.Bytes(), "item": it.Bytes(), "transaction": txb}
	for name, b := range all {
		if _, err := ParseEnvelope(b); (err == nil) != (name == "envelope") {
			t.Errorf("ParseEnvelope(%s bytes) error = %v", name, err)
		}
		if _, err := Parse(b); (err == nil) != (name == "transaction") {
			t.Errorf("Parse(%s bytes) error = %v", name, err)
		}
		if _, _, err := ParseSignedLoad(b); err == nil {
			t.Errorf("ParseSignedLoad(%s bytes) error = nil, want error", name)
		}
		if _, _, err := ParseSignedItem(b); err == nil {
			t.Errorf("ParseSignedItem(%s bytes) error = nil, want error", name)
		}
	}
	prefixes := []string{prefixEnvelope, prefixLoad, prefixItem}
	for i, p := range prefixes {
		for j, q := range prefixes {
			if i != j && strings.HasPrefix(p, q) {
				t.Errorf("prefix %q starts with prefix %q", p, q)
			}
		}
	}
}

// TestGolden pins the encodings to files in testdata, so that they never
// drift silently. Run with -update to rewrite them after a deliberate change
// (which breaks every card in the field).
func TestGolden(t *testing.T) {
	tx := sampleTransaction()
	txb, err := tx.Encode()
	if err != nil {
		t.Fatal(err)
	}
	e, l, it := sampleEnvelope(), sampleLoad(), sampleItem()
	tests := []struct {
		file string
		got  []byte
	}{
		{"transaction.hex", txb},
		{"envelope.hex", e.Bytes()},
		{"load.hex", l.EncodeSigned(fakeSig)},
		{"item.hex", it.EncodeSigned(fakeSig)},
	}
	for _, tt := range tests {
		path := filepath.Join("testdata", tt.file)
		if *update {
			if err := os.WriteFile(path, []byte(hex.EncodeToString(tt.got)+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		text, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		want, err := hex.DecodeString(strings.TrimSpace(string(text)))
		if err != nil {
			t.Fatalf("decoding %s: %v", path, err)
		}
		if !bytes.Equal(tt.got, want) {
			t.Errorf("encoding for %s = %X, want %X", tt.file, tt.got, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	tx := sampleTransaction()
	b, _ := tx.Encode()
	f.Add(b)
	f.Add(tlv(0xE1, txnFields()[:6]...))
	f.Fuzz(func(t *testing.T, b []byte) {
		tx, err := Parse(b)
		if err != nil {
			return
		}
		again, err := tx.Encode()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("Encode(Parse(%X)) = %X, %v, want the input", b, again, err)
		}
	})
}

func FuzzParseEnvelope(f *testing.F) {
	e := sampleEnvelope()
	f.Add(e.Bytes())
	e.Purpose, e.Payload = PurposeAuth, make([]byte, 32)
	f.Add(e.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := ParseEnvelope(b)
		if err != nil {
			return
		}
		if again := e.Bytes(); !bytes.Equal(again, b) {
			t.Fatalf("ParseEnvelope(%X).Bytes() = %X, want the input", b, again)
		}
	})
}

func FuzzParseSignedLoad(f *testing.F) {
	l := sampleLoad()
	f.Add(l.EncodeSigned(fakeSig))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, sig, err := ParseSignedLoad(b)
		if err != nil {
			return
		}
		if again := l.EncodeSigned(sig); !bytes.Equal(again, b) {
			t.Fatalf("EncodeSigned(ParseSignedLoad(%X)) = %X, want the input", b, again)
		}
	})
}

func FuzzParseLoad(f *testing.F) {
	l := sampleLoad()
	f.Add(l.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := ParseLoad(b)
		if err != nil {
			return
		}
		if again := l.Bytes(); !bytes.Equal(again, b) {
			t.Fatalf("ParseLoad(%X).Bytes() = %X, want the input", b, again)
		}
	})
}

func TestParseLoad(t *testing.T) {
	l := sampleLoad()
	got, err := ParseLoad(l.Bytes())
	if err != nil || got != l {
		t.Fatalf("ParseLoad(Bytes()) = %+v, %v; want %+v", got, err, l)
	}
	for name, b := range map[string][]byte{
		"no prefix":       l.Bytes()[len(prefixLoad):],
		"signed form":     l.EncodeSigned(fakeSig),
		"trailing byte":   append(l.Bytes(), 0),
		"envelope prefix": append([]byte(prefixEnvelope), l.Bytes()[len(prefixLoad):]...),
	} {
		if _, err := ParseLoad(b); err == nil {
			t.Errorf("ParseLoad(%s) = nil error, want a refusal", name)
		}
	}
}

func FuzzParseSignedItem(f *testing.F) {
	it := sampleItem()
	f.Add(it.EncodeSigned(fakeSig))
	it.Content = nil
	f.Add(it.EncodeSigned(fakeSig))
	f.Fuzz(func(t *testing.T, b []byte) {
		it, sig, err := ParseSignedItem(b)
		if err != nil {
			return
		}
		if again := it.EncodeSigned(sig); !bytes.Equal(again, b) {
			t.Fatalf("EncodeSigned(ParseSignedItem(%X)) = %X, want the input", b, again)
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	tx := sampleTransaction()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tx.Encode(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	tx := sampleTransaction()
	enc, _ := tx.Encode()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(enc); err != nil {
			b.Fatal(err)
		}
	}
}
