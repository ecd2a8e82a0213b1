package txn

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"time"
	"unicode"
	"unicode/utf8"

	"cardlink/internal/iso7816"
	"cardlink/internal/money"
)

// Template and field tags (see the package documentation for the layouts).
const (
	tagTransaction iso7816.Tag = 0xE1
	tagEnvelope    iso7816.Tag = 0xE2
	tagLoad        iso7816.Tag = 0xE3
	tagItem        iso7816.Tag = 0xE4
	tagSignedLoad  iso7816.Tag = 0xE5
	tagSignedItem  iso7816.Tag = 0xE6
	tagSignature   iso7816.Tag = 0x9E

	// Transaction fields (in E1).
	tagTxnID       iso7816.Tag = 0x80
	tagTxnMerchant iso7816.Tag = 0x81
	tagTxnItem     iso7816.Tag = 0x82
	tagTxnAmount   iso7816.Tag = 0x83
	tagTxnCurrency iso7816.Tag = 0x84
	tagTxnTime     iso7816.Tag = 0x85
	tagTxnNonce    iso7816.Tag = 0x86

	// Envelope fields (in E2).
	tagEnvPurpose iso7816.Tag = 0x80
	tagEnvCard    iso7816.Tag = 0x81
	tagEnvCounter iso7816.Tag = 0x82
	tagEnvCVM     iso7816.Tag = 0x83
	tagEnvPayload iso7816.Tag = 0x84

	// Load fields (in E3).
	tagLoadCard     iso7816.Tag = 0x80
	tagLoadSeq      iso7816.Tag = 0x81
	tagLoadAmount   iso7816.Tag = 0x82
	tagLoadCurrency iso7816.Tag = 0x83

	// Item fields (in E4).
	tagItemCard    iso7816.Tag = 0x80
	tagItemID      iso7816.Tag = 0x81
	tagItemKind    iso7816.Tag = 0x82
	tagItemTitle   iso7816.Tag = 0x83
	tagItemContent iso7816.Tag = 0x84
)

// Domain-separation prefixes of the signed byte strings.
const (
	prefixEnvelope = "cardlink/sig/v1"
	prefixLoad     = "cardlink/load/v1"
	prefixItem     = "cardlink/item/v1"
)

// Field limits.
const (
	maxMerchant   = 40
	maxItemText   = 64
	minNonce      = 16
	maxNonce      = 32
	maxPayload    = 1024
	maxTitle      = 40
	maxContent    = 1024
	minSignature  = 8
	maxSignature  = 80
	maxUnixSecond = 253402300799 // 9999-12-31T23:59:59Z

	// maxInput bounds every parser's input before any TLV work; each
	// structure's largest valid encoding is well below it.
	maxInput = 2048
)

// Transaction is what the holder sees on the device and the card signs.
type Transaction struct {
	ID       [16]byte     // server's transaction id
	Merchant string       // 1..40 bytes of printable UTF-8
	Item     string       // 1..64 bytes of printable UTF-8
	Amount   money.Amount // Minor > 0
	Time     time.Time    // whole seconds, UTC
	Nonce    []byte       // 16..32 bytes chosen by the server
}

// Validate reports the first field that breaks the rules above. Time must
// also lie between 1970 and the end of 9999; its location does not matter
// (it is encoded as Unix seconds).
func (t *Transaction) Validate() error {
	if err := checkText("merchant", t.Merchant, maxMerchant); err != nil {
		return err
	}
	if err := checkText("item", t.Item, maxItemText); err != nil {
		return err
	}
	if err := checkAmount(t.Amount); err != nil {
		return err
	}
	if t.Time.Nanosecond() != 0 {
		return errors.New("time: not a whole second")
	}
	if s := t.Time.Unix(); s < 0 || s > maxUnixSecond {
		return fmt.Errorf("time: %v out of range 1970..9999", t.Time)
	}
	if n := len(t.Nonce); n < minNonce || n > maxNonce {
		return fmt.Errorf("nonce: %d bytes, want %d..%d", n, minNonce, maxNonce)
	}
	return nil
}

// Encode returns the canonical bytes of a valid t.
func (t *Transaction) Encode() ([]byte, error) {
	if err := t.Validate(); err != nil {
		return nil, fmt.Errorf("encoding transaction: %w", err)
	}
	return t.appendTemplate(nil), nil
}

func (t *Transaction) appendTemplate(dst []byte) []byte {
	c := make([]byte, 0, 48+len(t.Merchant)+len(t.Item)+len(t.Nonce))
	c = iso7816.AppendTLV(c, tagTxnID, t.ID[:])
	c = iso7816.AppendTLV(c, tagTxnMerchant, []byte(t.Merchant))
	c = iso7816.AppendTLV(c, tagTxnItem, []byte(t.Item))
	c = appendUint64(c, tagTxnAmount, uint64(t.Amount.Minor))
	c = iso7816.AppendTLV(c, tagTxnCurrency, []byte(t.Amount.Currency))
	c = appendUint64(c, tagTxnTime, uint64(t.Time.Unix()))
	c = iso7816.AppendTLV(c, tagTxnNonce, t.Nonce)
	return iso7816.AppendTLV(dst, tagTransaction, c)
}

// Parse decodes canonical transaction bytes, refusing anything Encode
// would not produce.
func Parse(b []byte) (Transaction, error) {
	t, err := parseTransaction(b)
	if err != nil {
		return Transaction{}, fmt.Errorf("parsing transaction: %w", err)
	}
	return t, nil
}

func parseTransaction(b []byte) (Transaction, error) {
	tlv, err := parseOne(b, tagTransaction)
	if err != nil {
		return Transaction{}, err
	}
	f, err := fields(tlv, tagTxnID, tagTxnMerchant, tagTxnItem, tagTxnAmount, tagTxnCurrency, tagTxnTime, tagTxnNonce)
	if err != nil {
		return Transaction{}, err
	}
	var t Transaction
	if err := fixed("id", f[0], 16); err != nil {
		return Transaction{}, err
	}
	copy(t.ID[:], f[0])
	t.Merchant = string(f[1])
	t.Item = string(f[2])
	if t.Amount, err = parseAmount(f[3], f[4]); err != nil {
		return Transaction{}, err
	}
	if err := fixed("time", f[5], 8); err != nil {
		return Transaction{}, err
	}
	s := binary.BigEndian.Uint64(f[5])
	if s > maxUnixSecond {
		return Transaction{}, fmt.Errorf("time: %d seconds out of range", s)
	}
	t.Time = time.Unix(int64(s), 0).UTC()
	t.Nonce = bytes.Clone(f[6])
	if err := t.Validate(); err != nil {
		return Transaction{}, err
	}
	if !bytes.Equal(t.appendTemplate(nil), b) {
		return Transaction{}, errNonCanonical
	}
	return t, nil
}

// CVM is how the holder was verified for a signature.
type CVM byte

const (
	CVMNone       CVM = 0
	CVMOfflinePIN CVM = 1 // the card compared the PIN
	CVMOnlinePIN  CVM = 2 // the device declared that the server will check an encrypted PIN block
	CVMBiometric  CVM = 3 // the card matched a biometric template
)

// String returns "none", "offline PIN", "online PIN", "biometric" or
// "CVM(n)" for an unknown value.
func (c CVM) String() string {
	switch c {
	case CVMNone:
		return "none"
	case CVMOfflinePIN:
		return "offline PIN"
	case CVMOnlinePIN:
		return "online PIN"
	case CVMBiometric:
		return "biometric"
	}
	return "CVM(" + strconv.Itoa(int(c)) + ")"
}

// Purpose separates what a card signature is for, so that one can never pass
// for another (a login signature is not a transaction approval).
type Purpose byte

const (
	PurposeAuth        Purpose = 1 // INTERNAL AUTHENTICATE: payload is challenge (+ context)
	PurposeTransaction Purpose = 2 // SIGN TRANSACTION: payload is a canonical Transaction
	PurposePurseDebit  Purpose = 3 // purse DEBIT receipt: payload is a canonical Transaction
	PurposeLoadReceipt Purpose = 4 // purse LOAD acknowledgement: payload is the Load
)

// String returns "auth", "transaction", "purse debit", "load receipt" or
// "Purpose(n)" for an unknown value.
func (p Purpose) String() string {
	switch p {
	case PurposeAuth:
		return "auth"
	case PurposeTransaction:
		return "transaction"
	case PurposePurseDebit:
		return "purse debit"
	case PurposeLoadReceipt:
		return "load receipt"
	}
	return "Purpose(" + strconv.Itoa(int(p)) + ")"
}

// Envelope is what every card signature covers: ECDSA P-256 over SHA-256 of
// Bytes(), ASN.1 DER signature.
type Envelope struct {
	Purpose    Purpose
	CardNumber string // 16 decimal digits
	Counter    uint32 // the card's transaction counter after incrementing
	CVM        CVM
	Payload    []byte
}

// Validate reports the first field of e that cannot be encoded: an unknown
// Purpose or CVM, a card number that fails ValidCardNumber, or a Payload
// that is empty or longer than 1024 bytes.
func (e *Envelope) Validate() error {
	if e.Purpose < PurposeAuth || e.Purpose > PurposeLoadReceipt {
		return fmt.Errorf("purpose: unknown value %d", e.Purpose)
	}
	if err := ValidCardNumber(e.CardNumber); err != nil {
		return err
	}
	if e.CVM > CVMBiometric {
		return fmt.Errorf("cvm: unknown value %d", e.CVM)
	}
	if n := len(e.Payload); n < 1 || n > maxPayload {
		return fmt.Errorf("payload: %d bytes, want 1..%d", n, maxPayload)
	}
	return nil
}

// Bytes returns the domain-separated canonical bytes to sign. e must be
// valid (see Validate); the bytes of an invalid envelope are refused by
// ParseEnvelope and by VerifyEnvelope.
func (e *Envelope) Bytes() []byte {
	b := make([]byte, 0, len(prefixEnvelope)+32+len(e.Payload))
	b = append(b, prefixEnvelope...)
	return e.appendTemplate(b)
}

func (e *Envelope) appendTemplate(dst []byte) []byte {
	c := make([]byte, 0, 28+len(e.Payload))
	c = iso7816.AppendTLV(c, tagEnvPurpose, []byte{byte(e.Purpose)})
	c = iso7816.AppendTLV(c, tagEnvCard, CardNumberBCD(e.CardNumber))
	c = iso7816.AppendTLV(c, tagEnvCounter, binary.BigEndian.AppendUint32(nil, e.Counter))
	c = iso7816.AppendTLV(c, tagEnvCVM, []byte{byte(e.CVM)})
	c = iso7816.AppendTLV(c, tagEnvPayload, e.Payload)
	return iso7816.AppendTLV(dst, tagEnvelope, c)
}

// ParseEnvelope is the strict inverse of Bytes: it decodes the prefixed
// envelope, refusing anything Bytes would not produce.
func ParseEnvelope(b []byte) (Envelope, error) {
	e, err := parseEnvelope(b)
	if err != nil {
		return Envelope{}, fmt.Errorf("parsing envelope: %w", err)
	}
	return e, nil
}

func parseEnvelope(b []byte) (Envelope, error) {
	rest, ok := bytes.CutPrefix(b, []byte(prefixEnvelope))
	if !ok {
		return Envelope{}, errors.New("missing prefix " + strconv.Quote(prefixEnvelope))
	}
	tlv, err := parseOne(rest, tagEnvelope)
	if err != nil {
		return Envelope{}, err
	}
	f, err := fields(tlv, tagEnvPurpose, tagEnvCard, tagEnvCounter, tagEnvCVM, tagEnvPayload)
	if err != nil {
		return Envelope{}, err
	}
	var e Envelope
	if err := fixed("purpose", f[0], 1); err != nil {
		return Envelope{}, err
	}
	e.Purpose = Purpose(f[0][0])
	if e.CardNumber, err = ParseCardNumberBCD(f[1]); err != nil {
		return Envelope{}, err
	}
	if err := fixed("counter", f[2], 4); err != nil {
		return Envelope{}, err
	}
	e.Counter = binary.BigEndian.Uint32(f[2])
	if err := fixed("cvm", f[3], 1); err != nil {
		return Envelope{}, err
	}
	e.CVM = CVM(f[3][0])
	e.Payload = bytes.Clone(f[4])
	if err := e.Validate(); err != nil {
		return Envelope{}, err
	}
	if !bytes.Equal(e.appendTemplate(nil), rest) {
		return Envelope{}, errNonCanonical
	}
	return e, nil
}

// VerifyEnvelope reports whether sig is a valid ASN.1 DER ECDSA signature by
// the P-256 key pub over SHA-256 of e.Bytes(). It is false for an invalid e
// or a key on another curve.
func VerifyEnvelope(pub *ecdsa.PublicKey, e *Envelope, sig []byte) bool {
	if e.Validate() != nil {
		return false
	}
	return verify(pub, e.Bytes(), sig)
}

// Load is a purse load command, signed by the issuer.
type Load struct {
	CardNumber string
	Seq        uint32 // must be the purse's current sequence number + 1
	Amount     money.Amount
}

// Validate reports the first field of l that breaks the rules: the card
// number must pass ValidCardNumber, Seq must not be 0, Amount.Minor must be
// positive and its currency known to package money.
func (l *Load) Validate() error {
	if err := ValidCardNumber(l.CardNumber); err != nil {
		return err
	}
	if l.Seq == 0 {
		return errors.New("seq: zero")
	}
	return checkAmount(l.Amount)
}

// Bytes returns the canonical bytes the issuer signs (domain-separated).
// l must be valid (see Validate); the bytes of an invalid load never verify.
func (l *Load) Bytes() []byte {
	b := make([]byte, 0, len(prefixLoad)+40)
	b = append(b, prefixLoad...)
	return l.appendTemplate(b)
}

func (l *Load) appendTemplate(dst []byte) []byte {
	c := make([]byte, 0, 38)
	c = iso7816.AppendTLV(c, tagLoadCard, CardNumberBCD(l.CardNumber))
	c = iso7816.AppendTLV(c, tagLoadSeq, binary.BigEndian.AppendUint32(nil, l.Seq))
	c = appendUint64(c, tagLoadAmount, uint64(l.Amount.Minor))
	c = iso7816.AppendTLV(c, tagLoadCurrency, []byte(l.Amount.Currency))
	return iso7816.AppendTLV(dst, tagLoad, c)
}

// EncodeSigned returns the LOAD command data: the load and the issuer's signature.
// l must be valid and sig an ASN.1 DER signature of 8..80 bytes; otherwise
// ParseSignedLoad refuses the result.
func (l *Load) EncodeSigned(sig []byte) []byte {
	c := l.appendTemplate(make([]byte, 0, 48+len(sig)))
	c = iso7816.AppendTLV(c, tagSignature, sig)
	return iso7816.AppendTLV(nil, tagSignedLoad, c)
}

// ParseSignedLoad decodes LOAD command data into the load and signature.
// It refuses anything EncodeSigned would not produce from a valid load and
// a canonical DER signature; it does not verify the signature (VerifyLoad).
func ParseSignedLoad(b []byte) (Load, []byte, error) {
	l, sig, err := parseSignedLoad(b)
	if err != nil {
		return Load{}, nil, fmt.Errorf("parsing signed load: %w", err)
	}
	return l, sig, nil
}

func parseSignedLoad(b []byte) (Load, []byte, error) {
	tlv, err := parseOne(b, tagSignedLoad)
	if err != nil {
		return Load{}, nil, err
	}
	lt, sig, err := signedParts(tlv, tagLoad)
	if err != nil {
		return Load{}, nil, err
	}
	l, err := loadFields(lt)
	if err != nil {
		return Load{}, nil, err
	}
	if !bytes.Equal(l.EncodeSigned(sig), b) {
		return Load{}, nil, errNonCanonical
	}
	return l, sig, nil
}

// ParseLoad is the strict inverse of Load.Bytes: it decodes the prefixed
// load that an issuer signs and that a card's load receipt covers (the
// payload of a PurposeLoadReceipt envelope or log record).
func ParseLoad(b []byte) (Load, error) {
	rest, ok := bytes.CutPrefix(b, []byte(prefixLoad))
	if !ok {
		return Load{}, errors.New("parsing load: missing prefix " + strconv.Quote(prefixLoad))
	}
	lt, err := parseOne(rest, tagLoad)
	if err != nil {
		return Load{}, fmt.Errorf("parsing load: %w", err)
	}
	l, err := loadFields(lt)
	if err != nil {
		return Load{}, fmt.Errorf("parsing load: %w", err)
	}
	if !bytes.Equal(l.Bytes(), b) {
		return Load{}, fmt.Errorf("parsing load: %w", errNonCanonical)
	}
	return l, nil
}

// loadFields decodes and validates the fields of a load template.
func loadFields(lt iso7816.TLV) (Load, error) {
	f, err := fields(lt, tagLoadCard, tagLoadSeq, tagLoadAmount, tagLoadCurrency)
	if err != nil {
		return Load{}, err
	}
	var l Load
	if l.CardNumber, err = ParseCardNumberBCD(f[0]); err != nil {
		return Load{}, err
	}
	if err := fixed("seq", f[1], 4); err != nil {
		return Load{}, err
	}
	l.Seq = binary.BigEndian.Uint32(f[1])
	if l.Amount, err = parseAmount(f[2], f[3]); err != nil {
		return Load{}, err
	}
	if err := l.Validate(); err != nil {
		return Load{}, err
	}
	return l, nil
}

// VerifyLoad reports whether sig is a valid ASN.1 DER ECDSA signature by the
// P-256 key pub over SHA-256 of l.Bytes(). It is false for an invalid l or a
// key on another curve.
func VerifyLoad(pub *ecdsa.PublicKey, l *Load, sig []byte) bool {
	if l.Validate() != nil {
		return false
	}
	return verify(pub, l.Bytes(), sig)
}

// ItemKind says what an e-good is.
type ItemKind byte

const (
	ItemVoucher ItemKind = 1
	ItemTicket  ItemKind = 2
	ItemLicence ItemKind = 3
	ItemFile    ItemKind = 4
)

// String returns "voucher", "ticket", "licence", "file" or "ItemKind(n)"
// for an unknown value.
func (k ItemKind) String() string {
	switch k {
	case ItemVoucher:
		return "voucher"
	case ItemTicket:
		return "ticket"
	case ItemLicence:
		return "licence"
	case ItemFile:
		return "file"
	}
	return "ItemKind(" + strconv.Itoa(int(k)) + ")"
}

// Item is an e-good delivered into the card, signed by the issuer.
type Item struct {
	CardNumber string
	ID         [16]byte
	Kind       ItemKind
	Title      string // 1..40 bytes printable UTF-8
	Content    []byte // 0..1024 bytes
}

// Validate reports the first field of it that breaks the rules: the card
// number must pass ValidCardNumber and Kind must be one of the constants,
// besides the limits on Title and Content.
func (it *Item) Validate() error {
	if err := ValidCardNumber(it.CardNumber); err != nil {
		return err
	}
	if it.Kind < ItemVoucher || it.Kind > ItemFile {
		return fmt.Errorf("kind: unknown value %d", it.Kind)
	}
	if err := checkText("title", it.Title, maxTitle); err != nil {
		return err
	}
	if n := len(it.Content); n > maxContent {
		return fmt.Errorf("content: %d bytes, want at most %d", n, maxContent)
	}
	return nil
}

// Bytes returns the canonical bytes the issuer signs (domain-separated).
// it must be valid (see Validate); the bytes of an invalid item never verify.
func (it *Item) Bytes() []byte {
	b := make([]byte, 0, len(prefixItem)+48+len(it.Title)+len(it.Content))
	b = append(b, prefixItem...)
	return it.appendTemplate(b)
}

func (it *Item) appendTemplate(dst []byte) []byte {
	c := make([]byte, 0, 44+len(it.Title)+len(it.Content))
	c = iso7816.AppendTLV(c, tagItemCard, CardNumberBCD(it.CardNumber))
	c = iso7816.AppendTLV(c, tagItemID, it.ID[:])
	c = iso7816.AppendTLV(c, tagItemKind, []byte{byte(it.Kind)})
	c = iso7816.AppendTLV(c, tagItemTitle, []byte(it.Title))
	c = iso7816.AppendTLV(c, tagItemContent, it.Content)
	return iso7816.AppendTLV(dst, tagItem, c)
}

// EncodeSigned returns the STORE ITEM command data.
// it must be valid and sig an ASN.1 DER signature of 8..80 bytes; otherwise
// ParseSignedItem refuses the result.
func (it *Item) EncodeSigned(sig []byte) []byte {
	c := it.appendTemplate(make([]byte, 0, 64+len(it.Title)+len(it.Content)+len(sig)))
	c = iso7816.AppendTLV(c, tagSignature, sig)
	return iso7816.AppendTLV(nil, tagSignedItem, c)
}

// ParseSignedItem decodes STORE ITEM command data.
// It refuses anything EncodeSigned would not produce from a valid item and
// a canonical DER signature; it does not verify the signature (VerifyItem).
func ParseSignedItem(b []byte) (Item, []byte, error) {
	it, sig, err := parseSignedItem(b)
	if err != nil {
		return Item{}, nil, fmt.Errorf("parsing signed item: %w", err)
	}
	return it, sig, nil
}

func parseSignedItem(b []byte) (Item, []byte, error) {
	tlv, err := parseOne(b, tagSignedItem)
	if err != nil {
		return Item{}, nil, err
	}
	t, sig, err := signedParts(tlv, tagItem)
	if err != nil {
		return Item{}, nil, err
	}
	f, err := fields(t, tagItemCard, tagItemID, tagItemKind, tagItemTitle, tagItemContent)
	if err != nil {
		return Item{}, nil, err
	}
	var it Item
	if it.CardNumber, err = ParseCardNumberBCD(f[0]); err != nil {
		return Item{}, nil, err
	}
	if err := fixed("id", f[1], 16); err != nil {
		return Item{}, nil, err
	}
	copy(it.ID[:], f[1])
	if err := fixed("kind", f[2], 1); err != nil {
		return Item{}, nil, err
	}
	it.Kind = ItemKind(f[2][0])
	it.Title = string(f[3])
	if len(f[4]) > 0 {
		it.Content = bytes.Clone(f[4])
	}
	if err := it.Validate(); err != nil {
		return Item{}, nil, err
	}
	if !bytes.Equal(it.EncodeSigned(sig), b) {
		return Item{}, nil, errNonCanonical
	}
	return it, sig, nil
}

// VerifyItem reports whether sig is a valid ASN.1 DER ECDSA signature by the
// P-256 key pub over SHA-256 of it.Bytes(). It is false for an invalid it or
// a key on another curve.
func VerifyItem(pub *ecdsa.PublicKey, it *Item, sig []byte) bool {
	if it.Validate() != nil {
		return false
	}
	return verify(pub, it.Bytes(), sig)
}

// ValidCardNumber checks that s is 16 decimal digits whose last digit is the
// Luhn check digit (ISO/IEC 7812-1 Annex B).
func ValidCardNumber(s string) error {
	if len(s) != 16 {
		return fmt.Errorf("card number: %d characters, want 16 digits", len(s))
	}
	sum := 0
	for i := 0; i < 16; i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return errors.New("card number: not all decimal digits")
		}
		d := int(c - '0')
		if i%2 == 0 { // every second digit from the right, check digit excluded
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
	}
	if sum%10 != 0 {
		return errors.New("card number: wrong Luhn check digit")
	}
	return nil
}

// CardNumberBCD packs a 16-digit card number into 8 bytes of BCD, two digits
// a byte, most significant first, as in EMV tag 5A. It returns nil if s is
// not 16 decimal digits (the Luhn digit is not checked).
func CardNumberBCD(s string) []byte {
	if len(s) != 16 {
		return nil
	}
	b := make([]byte, 8)
	for i := 0; i < 16; i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return nil
		}
		b[i/2] |= (c - '0') << (4 * (1 - i%2))
	}
	return b
}

// ParseCardNumberBCD unpacks 8 bytes of BCD into a card number and checks it
// with ValidCardNumber. Nibbles A–F (including EMV's F padding) are refused.
func ParseCardNumberBCD(b []byte) (string, error) {
	if len(b) != 8 {
		return "", fmt.Errorf("card number: %d bytes of BCD, want 8", len(b))
	}
	var s [16]byte
	for i, x := range b {
		hi, lo := x>>4, x&0x0F
		if hi > 9 || lo > 9 {
			return "", fmt.Errorf("card number: byte %02X is not BCD", x)
		}
		s[2*i], s[2*i+1] = '0'+hi, '0'+lo
	}
	if err := ValidCardNumber(string(s[:])); err != nil {
		return "", err
	}
	return string(s[:]), nil
}

var errNonCanonical = errors.New("not in canonical form")

// parseOne parses b as exactly one BER-TLV object with tag want.
func parseOne(b []byte, want iso7816.Tag) (iso7816.TLV, error) {
	if len(b) > maxInput {
		return iso7816.TLV{}, fmt.Errorf("%d bytes, over the limit of %d", len(b), maxInput)
	}
	list, err := iso7816.ParseTLV(b)
	if err != nil {
		return iso7816.TLV{}, err
	}
	if len(list) != 1 {
		return iso7816.TLV{}, fmt.Errorf("%d objects, want one %X template", len(list), uint32(want))
	}
	if list[0].Tag != want {
		return iso7816.TLV{}, fmt.Errorf("tag %X, want %X", uint32(list[0].Tag), uint32(want))
	}
	return list[0], nil
}

// fields returns the values of t's children, which must be primitive and
// carry exactly the given tags in that order.
func fields(t iso7816.TLV, tags ...iso7816.Tag) ([][]byte, error) {
	if len(t.Children) != len(tags) {
		return nil, fmt.Errorf("template %X: %d fields, want %d", uint32(t.Tag), len(t.Children), len(tags))
	}
	v := make([][]byte, len(tags))
	for i, c := range t.Children {
		if c.Tag != tags[i] || c.Children != nil {
			return nil, fmt.Errorf("template %X: field %d has tag %X, want %X", uint32(t.Tag), i+1, uint32(c.Tag), uint32(tags[i]))
		}
		v[i] = c.Value
	}
	return v, nil
}

// signedParts splits a signed template into the inner template with tag
// inner and a canonical DER signature.
func signedParts(t iso7816.TLV, inner iso7816.Tag) (iso7816.TLV, []byte, error) {
	if len(t.Children) != 2 || t.Children[0].Tag != inner || t.Children[1].Tag != tagSignature {
		return iso7816.TLV{}, nil, fmt.Errorf("template %X: want %X and %X", uint32(t.Tag), uint32(inner), uint32(tagSignature))
	}
	sig := t.Children[1].Value
	if err := checkSignature(sig); err != nil {
		return iso7816.TLV{}, nil, err
	}
	return t.Children[0], bytes.Clone(sig), nil
}

// checkSignature checks that sig is a DER SEQUENCE of two positive INTEGERs
// of 8..80 bytes, in its one canonical form.
func checkSignature(sig []byte) error {
	if n := len(sig); n < minSignature || n > maxSignature {
		return fmt.Errorf("signature: %d bytes, want %d..%d", n, minSignature, maxSignature)
	}
	var rs struct{ R, S *big.Int }
	rest, err := asn1.Unmarshal(sig, &rs)
	if err != nil || len(rest) != 0 || rs.R.Sign() <= 0 || rs.S.Sign() <= 0 {
		return errors.New("signature: not an ASN.1 DER ECDSA signature")
	}
	if again, err := asn1.Marshal(rs); err != nil || !bytes.Equal(again, sig) {
		return errors.New("signature: not in DER form")
	}
	return nil
}

func fixed(name string, v []byte, n int) error {
	if len(v) != n {
		return fmt.Errorf("%s: %d bytes, want %d", name, len(v), n)
	}
	return nil
}

func appendUint64(dst []byte, tag iso7816.Tag, v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return iso7816.AppendTLV(dst, tag, b[:])
}

// parseAmount decodes an 8-byte amount and a 3-letter currency; the sign
// and currency are checked by checkAmount in Validate.
func parseAmount(minor, cur []byte) (money.Amount, error) {
	if err := fixed("amount", minor, 8); err != nil {
		return money.Amount{}, err
	}
	if err := fixed("currency", cur, 3); err != nil {
		return money.Amount{}, err
	}
	return money.Amount{Minor: int64(binary.BigEndian.Uint64(minor)), Currency: money.Currency(cur)}, nil
}

func checkAmount(a money.Amount) error {
	if a.Minor <= 0 {
		return fmt.Errorf("amount: %d minor units, want more than 0", a.Minor)
	}
	if _, err := money.ParseCurrency(string(a.Currency)); err != nil {
		return fmt.Errorf("amount: %w", err)
	}
	return nil
}

// checkText checks that s is 1..max bytes of UTF-8 whose runes are all
// printable (unicode.IsPrint).
func checkText(name, s string, max int) error {
	if len(s) < 1 || len(s) > max {
		return fmt.Errorf("%s: %d bytes, want 1..%d", name, len(s), max)
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

func verify(pub *ecdsa.PublicKey, msg, sig []byte) bool {
	if pub == nil || pub.Curve != elliptic.P256() {
		return false
	}
	h := sha256.Sum256(msg)
	return ecdsa.VerifyASN1(pub, h[:], sig)
}
