// Package protocol is the device↔server message set: what travels inside
// the secure channel (package channel), one message per channel message.
//
// # Wire format
//
// A message is a 2-byte header and a CBOR map (RFC 8949):
//
//	byte 0   version (Version, currently 1)
//	byte 1   type (Type)
//	byte 2…  the body: one CBOR map with small unsigned integer keys
//
// Two raw header bytes instead of a CBOR envelope {1: v, 2: type, 3: body}
// save 4 bytes a message and let a receiver refuse an unknown version or
// type before it decodes anything. Bodies use the core deterministic
// encoding (RFC 8949 §4.2.1: shortest integer and length forms, keys in
// ascending order), leave out fields that hold their zero value, and are
// refused when not in that form, so that one message has exactly one
// encoding (Decode(b) succeeds only if Encode(Decode(b)) == b), which
// keeps the golden files in testdata/golden honest. Decoding also refuses
// input over MaxSize, indefinite lengths, tags, duplicate or unknown map
// keys, nesting deeper than 4, invalid UTF-8, and values out of range for
// their field (the limits are in the constants below and in each
// message's doc).
//
// Any change to a message's fields is a new Version; the device says which
// version it speaks in every header, and a server that does not speak it
// answers Error{CodeUnsupportedVersion}. Error codes (Code) are append-only
// and are carried as numbers, so an older device shows "Code(n)" for a
// newer code rather than failing.
//
// Card data inside messages — certificates, signatures, canonical
// transactions (package txn, BER-TLV) — are opaque byte strings here:
// this package checks only their lengths.
//
// # Authentication exchange and its byte budget
//
// The goal is at most 600 bytes on the wire, both directions, for
// one authentication including the handshake. The device never sends the card certificate
// unless asked: the server issued it and keeps it, so the device names it
// by CertID (the first 8 bytes of its SHA-256) and the card number (8 bytes
// of BCD). Measured by TestAuthExchangeBudget, with a 72-byte signature,
// a 32-byte session binding and an online PIN block (the largest common
// case), each message costing 18 bytes of channel framing on top:
//
//	                                            encoded  on the wire
//	handshake (channel)                             -    98 + 50
//	device → server  Hello                         19    37
//	device → server  ChallengeRequest              25    43
//	server → device  Challenge                     78    96
//	device → server  AuthResponse                 139   157
//	server → device  AuthResult                     5    23
//	total                                               504 (335 up, 169 down)
//
// That is 4.2 s of airtime at 1200 bit/s with 10 bits a byte, 3.4 s with
// 8. Where bytes must be cut further: Hello can be skipped (37), and a
// server may leave Context empty (34).
//
// During a rotation of the server key, a device that made its channel with
// an older key gets ServerKeys once, just before the server's first reply:
// 2 bytes of header, 3 of map and array heads and 34 a key, plus 18 of
// framing, so 91 bytes with two keys (595 in all for the case above; the
// test measures it too). A device on the newest key never gets it.
//
// A card the server does not know costs one more round: the server answers
// Error{CodeCertificateNeeded} and the device repeats its ChallengeRequest
// with the certificate (about 600 more bytes, once per card).
//
// It imports txn (for Purpose and CVM), fxamacker/cbor and the standard
// library; it must not import channel or any link: it only encodes.
package protocol

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"strconv"
	"unicode"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"

	"cardlink/internal/txn"
)

// Limits of the wire format.
const (
	// Version is the protocol version this package speaks.
	Version = 1
	// MaxSize is the largest encoded message, header included; it fits in
	// one channel message (channel.MaxMessage is 4080).
	MaxSize = 2048

	ChallengeLen     = 32   // Challenge.Challenge
	MaxContext       = 64   // Challenge.Context, as the card accepts it
	CertIDLen        = 8    // ChallengeRequest.CertID
	MaxCertificate   = 1024 // ChallengeRequest.Certificate
	MinSignature     = 8    // card signatures, ASN.1 DER ECDSA P-256
	MaxSignature     = 80
	PINBlockLen      = 16  // an AES-encrypted ISO 9564 format 4 PIN block
	MaxBiometric     = 512 // AuthResponse.Biometric
	MaxTransaction   = 512 // TransactionOffer.Transaction
	TransactionIDLen = 16
	MaxText          = 128  // Error.Text
	MaxSoftware      = 32   // Hello.Software
	ServerKeyLen     = 32   // ServerKeys.Keys: one X25519 public key (channel.KeyLen)
	MaxServerKeys    = 8    // ServerKeys.Keys: as many as a device pins
	ReferenceLen     = 8    // OfferRequest.Reference: 7 digits and a Verhoeff check digit
	MaxGoods         = 1    // TransactionResult.Goods
	MaxGood          = 1200 // one signed e-good (txn.Item.EncodeSigned)

	headerLen = 2
)

// Errors that Decode and Encode wrap; callers branch with errors.Is.
var (
	ErrTooLarge    = errors.New("message too large")
	ErrVersion     = errors.New("unsupported protocol version")
	ErrUnknownType = errors.New("unknown message type")
	ErrMalformed   = errors.New("malformed message") // not well-formed, not deterministic, or of the wrong shape
	ErrInvalid     = errors.New("invalid message")   // well-formed, but a field is out of range
)

// Type is a message's type, byte 1 of its header.
type Type uint8

// Message types. Append-only, like Code.
const (
	TypeError               Type = 1
	TypeHello               Type = 2
	TypeChallengeRequest    Type = 3
	TypeChallenge           Type = 4
	TypeAuthResponse        Type = 5
	TypeAuthResult          Type = 6
	TypeTransactionOffer    Type = 7
	TypeTransactionApproval Type = 8
	TypeServerKeys          Type = 9
	TypeOfferRequest        Type = 10
	TypeTransactionResult   Type = 11
	TypePurseRequest        Type = 12
	TypePurseLoad           Type = 13
	TypeLoadReceipt         Type = 14
)

// String returns the message type's name, or "Type(n)".
func (t Type) String() string {
	switch t {
	case TypeError:
		return "Error"
	case TypeHello:
		return "Hello"
	case TypeChallengeRequest:
		return "ChallengeRequest"
	case TypeChallenge:
		return "Challenge"
	case TypeAuthResponse:
		return "AuthResponse"
	case TypeAuthResult:
		return "AuthResult"
	case TypeTransactionOffer:
		return "TransactionOffer"
	case TypeTransactionApproval:
		return "TransactionApproval"
	case TypeServerKeys:
		return "ServerKeys"
	case TypeOfferRequest:
		return "OfferRequest"
	case TypeTransactionResult:
		return "TransactionResult"
	case TypePurseRequest:
		return "PurseRequest"
	case TypePurseLoad:
		return "PurseLoad"
	case TypeLoadReceipt:
		return "LoadReceipt"
	}
	return "Type(" + strconv.Itoa(int(t)) + ")"
}

// newMessage returns a new, empty message of type t, or nil.
func newMessage(t Type) Message {
	switch t {
	case TypeError:
		return new(Error)
	case TypeHello:
		return new(Hello)
	case TypeChallengeRequest:
		return new(ChallengeRequest)
	case TypeChallenge:
		return new(Challenge)
	case TypeAuthResponse:
		return new(AuthResponse)
	case TypeAuthResult:
		return new(AuthResult)
	case TypeTransactionOffer:
		return new(TransactionOffer)
	case TypeTransactionApproval:
		return new(TransactionApproval)
	case TypeServerKeys:
		return new(ServerKeys)
	case TypeOfferRequest:
		return new(OfferRequest)
	case TypeTransactionResult:
		return new(TransactionResult)
	case TypePurseRequest:
		return new(PurseRequest)
	case TypePurseLoad:
		return new(PurseLoad)
	case TypeLoadReceipt:
		return new(LoadReceipt)
	}
	return nil
}

// Message is one of the pointer types below (*Hello, *Challenge, …); the
// set is closed.
type Message interface {
	// Type is the message's type byte.
	Type() Type
	validate() error
}

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	encMode, err = cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	decMode, err = cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		MaxNestedLevels:   4,
		MaxArrayElements:  16,
		MaxMapPairs:       16,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		UTF8:              cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// Encode validates m and returns its encoding. Errors wrap ErrInvalid (a
// field out of range) or ErrTooLarge.
func Encode(m Message) ([]byte, error) {
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("encoding %v: %w: %w", m.Type(), ErrInvalid, err)
	}
	body, err := encMode.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encoding %v: %w", m.Type(), err)
	}
	if headerLen+len(body) > MaxSize {
		return nil, fmt.Errorf("encoding %v: %w: %d bytes, limit %d", m.Type(), ErrTooLarge, headerLen+len(body), MaxSize)
	}
	return append([]byte{Version, byte(m.Type())}, body...), nil
}

// Decode parses one message. Errors wrap ErrTooLarge, ErrVersion,
// ErrUnknownType, ErrMalformed or ErrInvalid, checked in that order; the
// caller branches on the returned message's type with a type switch.
func Decode(b []byte) (Message, error) {
	if len(b) > MaxSize {
		return nil, fmt.Errorf("decoding message: %w: %d bytes, limit %d", ErrTooLarge, len(b), MaxSize)
	}
	if len(b) < headerLen {
		return nil, fmt.Errorf("decoding message: %w: %d bytes, shorter than the header", ErrMalformed, len(b))
	}
	if b[0] != Version {
		return nil, fmt.Errorf("decoding message: %w: %d, want %d", ErrVersion, b[0], Version)
	}
	t := Type(b[1])
	m := newMessage(t)
	if m == nil {
		return nil, fmt.Errorf("decoding message: %w: %d", ErrUnknownType, b[1])
	}
	body := b[headerLen:]
	if err := decMode.Unmarshal(body, m); err != nil {
		return nil, fmt.Errorf("decoding %v: %w: %v", t, ErrMalformed, err)
	}
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("decoding %v: %w: %w", t, ErrInvalid, err)
	}
	again, err := encMode.Marshal(m)
	if err != nil || !bytes.Equal(again, body) {
		return nil, fmt.Errorf("decoding %v: %w: not in deterministic encoding", t, ErrMalformed)
	}
	return m, nil
}

// CodeFor is the code a server answers a decoding error with: the
// message's own code for an *Error, CodeInternal for anything else
// unknown.
func CodeFor(err error) Code {
	var e *Error
	switch {
	case err == nil:
		return CodeOK
	case errors.As(err, &e):
		return e.Code
	case errors.Is(err, ErrTooLarge):
		return CodeTooLarge
	case errors.Is(err, ErrVersion):
		return CodeUnsupportedVersion
	case errors.Is(err, ErrUnknownType):
		return CodeUnexpectedMessage
	case errors.Is(err, ErrMalformed), errors.Is(err, ErrInvalid):
		return CodeMalformed
	}
	return CodeInternal
}

// CertID is how a device names a card certificate: the first CertIDLen
// bytes of SHA-256 over its DER. It only finds the certificate among those
// of one card number; it proves nothing.
func CertID(der []byte) []byte {
	h := sha256.Sum256(der)
	return h[:CertIDLen]
}

// CVMSet is a set of holder verification methods: bit n stands for
// txn.CVM(n). The empty set is not valid on the wire.
type CVMSet uint8

// CVMs returns the set of the given methods.
func CVMs(cs ...txn.CVM) CVMSet {
	var s CVMSet
	for _, c := range cs {
		s |= 1 << c
	}
	return s
}

// Has reports whether c is in s.
func (s CVMSet) Has(c txn.CVM) bool { return c <= txn.CVMBiometric && s&(1<<c) != 0 }

func (s CVMSet) validate(name string) error {
	if s == 0 || s >= 1<<(txn.CVMBiometric+1) {
		return fmt.Errorf("%s: %#x is not a set of known methods", name, uint8(s))
	}
	return nil
}

// CardNumber is a 16-digit card number. On the wire it is 8 bytes of packed
// BCD (as in EMV tag 5A) rather than 16 characters of text.
type CardNumber string

// MarshalCBOR encodes n as a byte string of packed BCD.
func (n CardNumber) MarshalCBOR() ([]byte, error) {
	b := txn.CardNumberBCD(string(n))
	if b == nil {
		return nil, fmt.Errorf("card number %q: not 16 digits", string(n))
	}
	return encMode.Marshal(b)
}

// UnmarshalCBOR decodes a byte string of packed BCD and checks the number
// with txn.ValidCardNumber.
func (n *CardNumber) UnmarshalCBOR(data []byte) error {
	var b []byte
	if err := decMode.Unmarshal(data, &b); err != nil {
		return err
	}
	s, err := txn.ParseCardNumberBCD(b)
	if err != nil {
		return err
	}
	*n = CardNumber(s)
	return nil
}

// Error is a refusal, in either direction: the sender gives up on the
// current exchange. It is also a Go error, so that a device can return it.
type Error struct {
	Code Code   `cbor:"1,keyasint,omitempty"` // not CodeOK; may be unknown to this build
	Text string `cbor:"2,keyasint,omitempty"` // optional, user-safe detail, at most MaxText bytes, printable
}

// Type returns TypeError.
func (*Error) Type() Type { return TypeError }

// Error reads e.g. "server: card revoked (10)" or, with text,
// "server: PIN incorrect (17): 2 tries left".
func (e *Error) Error() string {
	s := "server: " + e.Code.String() + " (" + strconv.Itoa(int(e.Code)) + ")"
	if e.Text != "" {
		s += ": " + e.Text
	}
	return s
}

func (e *Error) validate() error {
	if e.Code == CodeOK {
		return errors.New("code: 0 is not an error")
	}
	return checkText("text", e.Text, 0, MaxText)
}

// Device abilities announced in Hello.Features. Unknown bits are allowed:
// a newer device may announce what this build does not know.
const (
	FeaturePINPad    = 1 << 0 // a keypad for PIN entry
	FeatureBiometric = 1 << 1 // a biometric sensor
	FeaturePrinter   = 1 << 2 // a receipt printer
)

// Hello opens a conversation, device → server. The device's identity is
// its channel static key; Hello says what it runs and can do.
type Hello struct {
	Software string `cbor:"1,keyasint,omitempty"` // e.g. "cardlink/0.1", at most MaxSoftware bytes, printable
	Features uint32 `cbor:"2,keyasint,omitempty"` // Feature* bits
}

// Type returns TypeHello.
func (*Hello) Type() Type { return TypeHello }

func (h *Hello) validate() error {
	return checkText("software", h.Software, 0, MaxSoftware)
}

// ChallengeRequest asks for a challenge for a card, device → server.
type ChallengeRequest struct {
	CardNumber  CardNumber  `cbor:"1,keyasint,omitempty"` // required
	CertID      []byte      `cbor:"2,keyasint,omitempty"` // CertID of the card certificate, CertIDLen bytes
	Purpose     txn.Purpose `cbor:"3,keyasint,omitempty"` // what the card will sign (txn.PurposeAuth to authenticate)
	Certificate []byte      `cbor:"4,keyasint,omitempty"` // the card certificate's DER, only after CodeCertificateNeeded; at most MaxCertificate
}

// Type returns TypeChallengeRequest.
func (*ChallengeRequest) Type() Type { return TypeChallengeRequest }

func (r *ChallengeRequest) validate() error {
	if err := txn.ValidCardNumber(string(r.CardNumber)); err != nil {
		return err
	}
	if err := checkLen("cert id", r.CertID, CertIDLen, CertIDLen); err != nil {
		return err
	}
	if err := checkPurpose(r.Purpose); err != nil {
		return err
	}
	if len(r.Certificate) > 0 {
		if err := checkLen("certificate", r.Certificate, 1, MaxCertificate); err != nil {
			return err
		}
		if !bytes.Equal(CertID(r.Certificate), r.CertID) {
			return errors.New("certificate: does not match the cert id")
		}
	}
	return nil
}

// Challenge is the server's challenge, server → device. The device has the
// card sign it (INTERNAL AUTHENTICATE with Context as the context) within
// TTL seconds.
type Challenge struct {
	Challenge []byte `cbor:"1,keyasint,omitempty"` // ChallengeLen random bytes, single use
	TTL       uint32 `cbor:"2,keyasint,omitempty"` // lifetime in seconds, at least 1
	Context   []byte `cbor:"3,keyasint,omitempty"` // the session binding the card signs with it, at most MaxContext bytes
	CVMs      CVMSet `cbor:"4,keyasint,omitempty"` // holder verification methods the server accepts
}

// Type returns TypeChallenge.
func (*Challenge) Type() Type { return TypeChallenge }

func (c *Challenge) validate() error {
	if err := checkLen("challenge", c.Challenge, ChallengeLen, ChallengeLen); err != nil {
		return err
	}
	if c.TTL == 0 {
		return errors.New("ttl: zero")
	}
	if err := checkLen("context", c.Context, 0, MaxContext); err != nil {
		return err
	}
	return c.CVMs.validate("cvms")
}

// AuthResponse is the card's answer to a Challenge, device → server.
type AuthResponse struct {
	Challenge []byte  `cbor:"1,keyasint,omitempty"` // the challenge answered, ChallengeLen bytes
	Counter   uint32  `cbor:"2,keyasint,omitempty"` // the card's counter after incrementing, at least 1
	CVM       txn.CVM `cbor:"3,keyasint,omitempty"` // how the holder was verified, as the card signed it
	Signature []byte  `cbor:"4,keyasint,omitempty"` // the card's signature over the txn.Envelope, MinSignature..MaxSignature bytes of DER
	PINBlock  []byte  `cbor:"5,keyasint,omitempty"` // for online PIN: the encrypted PIN block, PINBlockLen bytes
	Biometric []byte  `cbor:"6,keyasint,omitempty"` // for server-side matching: the template, at most MaxBiometric bytes
}

// Type returns TypeAuthResponse.
func (*AuthResponse) Type() Type { return TypeAuthResponse }

func (r *AuthResponse) validate() error {
	if err := checkLen("challenge", r.Challenge, ChallengeLen, ChallengeLen); err != nil {
		return err
	}
	return checkSigned(r.Counter, r.CVM, r.Signature, r.PINBlock, r.Biometric)
}

// AuthResult ends an authentication, server → device.
type AuthResult struct {
	Code      Code    `cbor:"1,keyasint,omitempty"` // CodeOK when the holder is authenticated
	CVM       txn.CVM `cbor:"2,keyasint,omitempty"` // with CodeOK: the verification method the server accepted
	TriesLeft uint8   `cbor:"3,keyasint,omitempty"` // with CodePINIncorrect: online PIN tries left
}

// Type returns TypeAuthResult.
func (*AuthResult) Type() Type { return TypeAuthResult }

func (r *AuthResult) validate() error {
	if r.CVM > txn.CVMBiometric {
		return fmt.Errorf("cvm: unknown value %d", r.CVM)
	}
	return nil
}

// OfferRequest asks for the transaction a card holder is to approve,
// device → server: the pending purchase with Reference (the code the
// holder typed or heard), or, with Reference empty, the oldest purchase
// the merchant addressed to the card (pushed). The card is named as in a
// ChallengeRequest, with the same certificate exchange
// (CodeCertificateNeeded).
//
// The answer is a TransactionOffer, or — when Reference names a purchase
// this card paid already (its TransactionResult was lost on the way) — that
// purchase's TransactionResult again: CodeOK, the CVM accepted then and
// its e-goods signed again, with nothing paid or counted anew. Another
// card asking with that reference gets CodeTransactionUnknown. So does a
// request with no Reference and Paid set, when nothing is pending for the
// card: Paid names the pushed transaction whose result the device lost,
// and the server answers its result again if this card paid it.
type OfferRequest struct {
	Reference   string     `cbor:"1,keyasint,omitempty"` // ReferenceLen ASCII digits, or empty
	CardNumber  CardNumber `cbor:"2,keyasint,omitempty"` // required
	CertID      []byte     `cbor:"3,keyasint,omitempty"` // CertID of the card certificate, CertIDLen bytes
	Certificate []byte     `cbor:"4,keyasint,omitempty"` // only after CodeCertificateNeeded; at most MaxCertificate
	Paid        []byte     `cbor:"5,keyasint,omitempty"` // TransactionIDLen bytes, only with no Reference: a pushed transaction the card signed whose result was lost
}

// Type returns TypeOfferRequest.
func (*OfferRequest) Type() Type { return TypeOfferRequest }

func (r *OfferRequest) validate() error {
	if r.Reference != "" {
		if len(r.Reference) != ReferenceLen {
			return fmt.Errorf("reference: %d characters, want %d", len(r.Reference), ReferenceLen)
		}
		for i := 0; i < len(r.Reference); i++ {
			if c := r.Reference[i]; c < '0' || c > '9' {
				return errors.New("reference: not all digits")
			}
		}
	}
	if err := txn.ValidCardNumber(string(r.CardNumber)); err != nil {
		return err
	}
	if err := checkLen("cert id", r.CertID, CertIDLen, CertIDLen); err != nil {
		return err
	}
	if len(r.Certificate) > 0 {
		if err := checkLen("certificate", r.Certificate, 1, MaxCertificate); err != nil {
			return err
		}
		if !bytes.Equal(CertID(r.Certificate), r.CertID) {
			return errors.New("certificate: does not match the cert id")
		}
	}
	if r.Paid != nil {
		if r.Reference != "" {
			return errors.New("paid: only for a pushed purchase (no reference)")
		}
		if err := checkLen("paid", r.Paid, TransactionIDLen, TransactionIDLen); err != nil {
			return err
		}
	}
	return nil
}

// TransactionOffer asks the holder to approve a transaction, server →
// device, in answer to an OfferRequest. The device shows the merchant,
// item and amount of Transaction, verifies the holder by one of CVMs, and
// has the card sign Transaction (SIGN TRANSACTION) within TTL seconds;
// it answers with a TransactionApproval, or an Error with
// CodeHolderDeclined when the holder declines.
type TransactionOffer struct {
	Transaction []byte `cbor:"1,keyasint,omitempty"` // the canonical txn.Transaction (template E1), 1..MaxTransaction bytes
	CVMs        CVMSet `cbor:"2,keyasint,omitempty"` // holder verification methods the server accepts
	TTL         uint32 `cbor:"3,keyasint,omitempty"` // seconds left until the server's deadline, at least 1
}

// Type returns TypeTransactionOffer.
func (*TransactionOffer) Type() Type { return TypeTransactionOffer }

func (o *TransactionOffer) validate() error {
	if err := checkLen("transaction", o.Transaction, 1, MaxTransaction); err != nil {
		return err
	}
	if o.TTL == 0 {
		return errors.New("ttl: zero")
	}
	return o.CVMs.validate("cvms")
}

// TransactionApproval is the card's signature over an offered
// transaction, device → server: Envelope{PurposeTransaction, card,
// Counter, CVM, payload = the offered Transaction bytes}. A holder who
// declines sends Error{CodeHolderDeclined} instead.
type TransactionApproval struct {
	ID        []byte  `cbor:"1,keyasint,omitempty"` // the transaction's id, TransactionIDLen bytes
	Counter   uint32  `cbor:"2,keyasint,omitempty"` // the card's counter after incrementing, at least 1
	CVM       txn.CVM `cbor:"3,keyasint,omitempty"` // as the card signed it
	Signature []byte  `cbor:"4,keyasint,omitempty"` // MinSignature..MaxSignature bytes of DER
	PINBlock  []byte  `cbor:"5,keyasint,omitempty"` // for online PIN, as in AuthResponse
	Biometric []byte  `cbor:"6,keyasint,omitempty"` // for server-side matching, as in AuthResponse
}

// Type returns TypeTransactionApproval.
func (*TransactionApproval) Type() Type { return TypeTransactionApproval }

func (a *TransactionApproval) validate() error {
	if err := checkLen("id", a.ID, TransactionIDLen, TransactionIDLen); err != nil {
		return err
	}
	return checkSigned(a.Counter, a.CVM, a.Signature, a.PINBlock, a.Biometric)
}

// TransactionResult ends a transaction, server → device: the answer to a
// TransactionApproval, or to a decline; or, again, to an OfferRequest by
// reference for a purchase the card paid before (see OfferRequest), so
// that goods lost with the first answer are delivered.
type TransactionResult struct {
	ID        []byte  `cbor:"1,keyasint,omitempty"` // the transaction's id, TransactionIDLen bytes
	Code      Code    `cbor:"2,keyasint,omitempty"` // CodeOK when paid; else why not (CodeHolderDeclined for a decline)
	CVM       txn.CVM `cbor:"3,keyasint,omitempty"` // with CodeOK: the verification method the server accepted
	TriesLeft uint8   `cbor:"4,keyasint,omitempty"` // with CodePINIncorrect or CodeBiometricMismatch
	// Goods are the e-goods the purchase delivers, each a signed item
	// (txn.Item.EncodeSigned, template E6) for the card's STORE ITEM: at
	// most MaxGoods, each at most MaxGood bytes.
	Goods [][]byte `cbor:"5,keyasint,omitempty"`
}

// Type returns TypeTransactionResult.
func (*TransactionResult) Type() Type { return TypeTransactionResult }

func (r *TransactionResult) validate() error {
	if err := checkLen("id", r.ID, TransactionIDLen, TransactionIDLen); err != nil {
		return err
	}
	if r.CVM > txn.CVMBiometric {
		return fmt.Errorf("cvm: unknown value %d", r.CVM)
	}
	if len(r.Goods) > MaxGoods {
		return fmt.Errorf("goods: %d, want at most %d", len(r.Goods), MaxGoods)
	}
	if len(r.Goods) > 0 && r.Code != CodeOK {
		return errors.New("goods: delivered without CodeOK")
	}
	for i, g := range r.Goods {
		if err := checkLen(fmt.Sprintf("good %d", i), g, 1, MaxGood); err != nil {
			return err
		}
	}
	return nil
}

// ServerKeys tells a device the server's static public keys, server →
// device, during a rotation of the server key (see package server). The
// server sends it at most once per connection, as the first message of its
// first reply, when the device made its channel with a key that is not the
// server's newest; the device then pins Keys in place of what it pinned.
// It arrives inside the channel, so the key the device already trusts
// vouches for it; Keys must hold that key (the device refuses a list that
// would strand it).
type ServerKeys struct {
	// Keys are the server's current keys, newest first, down to the one
	// the device used: 1..MaxServerKeys distinct keys of ServerKeyLen bytes.
	Keys [][]byte `cbor:"1,keyasint,omitempty"`
}

// Type returns TypeServerKeys.
func (*ServerKeys) Type() Type { return TypeServerKeys }

func (k *ServerKeys) validate() error {
	if len(k.Keys) == 0 || len(k.Keys) > MaxServerKeys {
		return fmt.Errorf("keys: %d, want 1..%d", len(k.Keys), MaxServerKeys)
	}
	for i, key := range k.Keys {
		if err := checkLen(fmt.Sprintf("key %d", i), key, ServerKeyLen, ServerKeyLen); err != nil {
			return err
		}
		for _, prev := range k.Keys[:i] {
			if bytes.Equal(prev, key) {
				return fmt.Errorf("key %d: a duplicate", i)
			}
		}
	}
	return nil
}

// checkSigned checks the fields a card signature brings along.
func checkSigned(counter uint32, cvm txn.CVM, sig, pinBlock, bio []byte) error {
	if counter == 0 {
		return errors.New("counter: zero")
	}
	if cvm > txn.CVMBiometric {
		return fmt.Errorf("cvm: unknown value %d", cvm)
	}
	if err := checkLen("signature", sig, MinSignature, MaxSignature); err != nil {
		return err
	}
	if len(pinBlock) > 0 {
		if err := checkLen("pin block", pinBlock, PINBlockLen, PINBlockLen); err != nil {
			return err
		}
	}
	return checkLen("biometric", bio, 0, MaxBiometric)
}

func checkPurpose(p txn.Purpose) error {
	if p < txn.PurposeAuth || p > txn.PurposeLoadReceipt {
		return fmt.Errorf("purpose: unknown value %d", p)
	}
	return nil
}

func checkLen(name string, b []byte, lo, hi int) error {
	if len(b) < lo || len(b) > hi {
		if lo == hi {
			return fmt.Errorf("%s: %d bytes, want %d", name, len(b), lo)
		}
		return fmt.Errorf("%s: %d bytes, want %d..%d", name, len(b), lo, hi)
	}
	return nil
}

// checkText checks that s is lo..hi bytes of printable UTF-8.
func checkText(name, s string, lo, hi int) error {
	if len(s) < lo || len(s) > hi {
		return fmt.Errorf("%s: %d bytes, want %d..%d", name, len(s), lo, hi)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s: not valid UTF-8", name)
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%s: unprintable character %U", name, r)
		}
	}
	return nil
}
