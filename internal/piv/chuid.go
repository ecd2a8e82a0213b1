package piv

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"time"

	"cardlink/internal/iso7816"
	"cardlink/internal/reader"
)

// CHUID tags (SP 800-73-4 Part 1 Table 9).
const (
	tagFASCN     iso7816.Tag = 0x30
	tagGUID      iso7816.Tag = 0x34
	tagExpiry    iso7816.Tag = 0x35
	tagSignature iso7816.Tag = 0x3E
)

// Sizes of CHUID fields.
const (
	fascnLen  = 25
	guidLen   = 16
	expiryLen = 8 // YYYYMMDD
	digitsLen = 16
)

// expiryLayout is the CHUID expiration date format.
const expiryLayout = "20060102"

// CHUID is the Card Holder Unique Identifier (SP 800-73-4 Part 1 §3.1.2):
// the FASC-N, the card's GUID and its expiration date. cardlink writes an
// empty issuer signature (3E 00), as test cards and YubiKeys do: relying
// parties check the certificates, not the CHUID signature.
type CHUID struct {
	FASCN  [fascnLen]byte
	GUID   [guidLen]byte
	Expiry time.Time // a date, UTC
}

// NewCHUID builds the CHUID of card number (16 digits) with the given GUID
// and expiry; the FASC-N is derived from the number (see FASCN).
func NewCHUID(number string, guid [guidLen]byte, expiry time.Time) (*CHUID, error) {
	f, err := FASCN(number)
	if err != nil {
		return nil, fmt.Errorf("building CHUID: %w", err)
	}
	y, m, d := expiry.UTC().Date()
	return &CHUID{FASCN: f, GUID: guid, Expiry: time.Date(y, m, d, 0, 0, 0, 0, time.UTC)}, nil
}

// Bytes encodes the CHUID object's content:
// 30 FASC-N, 34 GUID, 35 YYYYMMDD, 3E (empty), FE (empty).
func (c *CHUID) Bytes() []byte {
	b := iso7816.AppendTLV(nil, tagFASCN, c.FASCN[:])
	b = iso7816.AppendTLV(b, tagGUID, c.GUID[:])
	b = iso7816.AppendTLV(b, tagExpiry, []byte(c.Expiry.Format(expiryLayout)))
	b = iso7816.AppendTLV(b, tagSignature, nil)
	return iso7816.AppendTLV(b, tagEDC, nil)
}

// ParseCHUID decodes a CHUID object's content. It needs a 25-byte FASC-N,
// a 16-byte GUID and a valid expiration date; other fields (organization,
// DUNS, UUID, the signature) are accepted and ignored.
func ParseCHUID(b []byte) (*CHUID, error) {
	list, err := parseFlat(b)
	if err != nil {
		return nil, fmt.Errorf("parsing CHUID: %w", err)
	}
	var c CHUID
	f, ok1 := iso7816.FindTLV(list, tagFASCN)
	g, ok2 := iso7816.FindTLV(list, tagGUID)
	e, ok3 := iso7816.FindTLV(list, tagExpiry)
	if !ok1 || !ok2 || !ok3 || len(f.Value) != fascnLen || len(g.Value) != guidLen || len(e.Value) != expiryLen {
		return nil, fmt.Errorf("parsing CHUID: %w: FASC-N, GUID or expiry missing or of the wrong size", iso7816.ErrMalformed)
	}
	for _, ch := range e.Value {
		if ch < '0' || ch > '9' {
			return nil, fmt.Errorf("parsing CHUID: %w: expiry %q", iso7816.ErrMalformed, e.Value)
		}
	}
	t, err := time.Parse(expiryLayout, string(e.Value))
	if err != nil {
		return nil, fmt.Errorf("parsing CHUID: %w: expiry %q", iso7816.ErrMalformed, e.Value)
	}
	c.FASCN, c.GUID, c.Expiry = [fascnLen]byte(f.Value), [guidLen]byte(g.Value), t
	return &c, nil
}

// PutCHUID writes the CHUID object. It needs the management key.
func (c *Client) PutCHUID(ctx context.Context, chuid *CHUID) error {
	if err := c.PutObject(ctx, ObjectCHUID, chuid.Bytes()); err != nil {
		return fmt.Errorf("putting CHUID: %w", err)
	}
	return nil
}

// CHUID reads the CHUID object.
func (c *Client) CHUID(ctx context.Context) (*CHUID, error) {
	b, err := c.Object(ctx, ObjectCHUID)
	if err != nil {
		return nil, fmt.Errorf("getting CHUID: %w", err)
	}
	return ParseCHUID(b)
}

// FASC-N characters (TIG SCEPACS v2.3 §6): 4-bit BCD plus an odd parity
// bit, 40 characters of 5 bits in 25 bytes.
const (
	fascnSS    = 0xB // start sentinel
	fascnFS    = 0xD // field separator
	fascnES    = 0xF // end sentinel
	fascnChars = 40  // characters, LRC included
)

// FASCN derives cardlink's FASC-N from a 16-digit card number: agency code
// 9999 (not a federal agency), system code = digits 1–4, credential number
// = digits 11–16, credential series 0, issue 1, person identifier =
// digits 1–10, organizational category 3 (commercial), organization 9999,
// association 1 (employee).
func FASCN(number string) ([fascnLen]byte, error) {
	if len(number) != digitsLen || !allDigits(number) {
		return [fascnLen]byte{}, fmt.Errorf("deriving FASC-N: card number %q is not 16 digits", number)
	}
	fields := []string{"9999", number[0:4], number[10:16], "0", "1"}
	var chars []byte
	chars = append(chars, fascnSS)
	for _, f := range fields {
		chars = appendDigits(chars, f)
		chars = append(chars, fascnFS)
	}
	chars = appendDigits(chars, number[0:10]+"3"+"9999"+"1")
	chars = append(chars, fascnES)
	lrc := byte(0)
	for _, ch := range chars {
		lrc ^= ch
	}
	return encodeFASCN(append(chars, lrc)), nil
}

// encodeFASCN packs 40 FASC-N characters (LRC included): each as its 4
// bits least significant first, then an odd parity bit.
func encodeFASCN(chars []byte) [fascnLen]byte {
	var out [fascnLen]byte
	for i, ch := range chars[:fascnChars] {
		v := uint64(0)
		ones := 0
		for bit := range 4 {
			b := ch >> bit & 1
			v = v<<1 | uint64(b)
			ones += int(b)
		}
		v = v<<1 | uint64(1-ones%2)
		putBits(out[:], 5*i, v)
	}
	return out
}

// decodeFASCN splits a FASC-N into its 40 characters, checking every
// parity bit and the LRC.
func decodeFASCN(b [fascnLen]byte) ([]byte, error) {
	chars := make([]byte, fascnChars)
	lrc := byte(0)
	for i := range chars {
		v := getBits(b[:], 5*i)
		ch, ones := byte(0), 0
		for bit := range 4 {
			bb := byte(v >> (4 - bit) & 1)
			ch |= bb << bit
			ones += int(bb)
		}
		if (ones+int(v&1))%2 != 1 {
			return nil, fmt.Errorf("decoding FASC-N: %w: parity of character %d", iso7816.ErrMalformed, i)
		}
		chars[i] = ch
		if i < fascnChars-1 {
			lrc ^= ch
		}
	}
	if chars[fascnChars-1] != lrc {
		return nil, fmt.Errorf("decoding FASC-N: %w: LRC", iso7816.ErrMalformed)
	}
	return chars, nil
}

// putBits writes the 5 low bits of v at bit offset off (MSB first).
func putBits(dst []byte, off int, v uint64) {
	for i := range 5 {
		if v>>(4-i)&1 == 1 {
			dst[(off+i)/8] |= 0x80 >> ((off + i) % 8)
		}
	}
}

// getBits reads 5 bits at bit offset off (MSB first).
func getBits(src []byte, off int) uint64 {
	var v uint64
	for i := range 5 {
		v = v<<1 | uint64(src[(off+i)/8]>>(7-(off+i)%8)&1)
	}
	return v
}

func appendDigits(dst []byte, s string) []byte {
	for i := range len(s) {
		dst = append(dst, s[i]-'0')
	}
	return dst
}

func allDigits(s string) bool {
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// cccContent builds a Card Capability Container (SP 800-73-4 Part 1
// §3.1.1, Table 8) with the card identifier GSC-RID A0 00 00 01 16,
// manufacturer FF, card type 02 and a 14-byte card id; version 2.1 fields
// and empty optional ones, as PIV middleware expects to find.
func cccContent(id [14]byte) []byte {
	cardID := append([]byte{0xA0, 0x00, 0x00, 0x01, 0x16, 0xFF, 0x02}, id[:]...)
	b := iso7816.AppendTLV(nil, 0xF0, cardID)
	b = iso7816.AppendTLV(b, 0xF1, []byte{0x21}) // capability container version
	b = iso7816.AppendTLV(b, 0xF2, []byte{0x21}) // capability grammar version
	b = iso7816.AppendTLV(b, 0xF3, nil)          // applications CardURL
	b = iso7816.AppendTLV(b, 0xF4, []byte{0x00}) // PKCS#15: no
	b = iso7816.AppendTLV(b, 0xF5, []byte{0x10}) // registered data model number
	for _, t := range []iso7816.Tag{0xF6, 0xF7, 0xFA, 0xFB, 0xFC, 0xFD, tagEDC} {
		b = iso7816.AppendTLV(b, t, nil)
	}
	return b
}

// Personalize makes a blank (or reset) PIV applet the card holder's
// credential, as `cardlink card new` does: it authenticates with the
// default management key, generates a P-256 key in slot 9A on the card,
// has issue certify the public key, and writes the certificate, a CHUID
// (FASC-N from number, a random GUID, the certificate's expiry) and a CCC.
// The PIN, PUK and management key stay the defaults: the holder or the
// issuer must change them (docs/piv-applet.md).
func Personalize(ctx context.Context, conn reader.Conn, number string, issue func(pub *ecdsa.PublicKey) (*x509.Certificate, error)) error {
	if len(number) != digitsLen || !allDigits(number) {
		return fmt.Errorf("personalizing PIV: card number %q is not 16 digits", number)
	}
	c, err := Select(ctx, conn)
	if err != nil {
		return fmt.Errorf("personalizing PIV: %w", err)
	}
	if err := c.AuthenticateManagementKey(ctx, DefaultManagementKey); err != nil {
		return fmt.Errorf("personalizing PIV: %w", err)
	}
	pub, err := c.GenerateKey(ctx, SlotAuthentication)
	if err != nil {
		return fmt.Errorf("personalizing PIV: %w", err)
	}
	cert, err := issue(pub)
	if err != nil {
		return fmt.Errorf("personalizing PIV: issuing certificate: %w", err)
	}
	if cpub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || !cpub.Equal(pub) {
		return errors.New("personalizing PIV: the issued certificate is not for the card's key")
	}
	if err := c.PutCertificate(ctx, SlotAuthentication, cert); err != nil {
		return fmt.Errorf("personalizing PIV: %w", err)
	}
	var guid [guidLen]byte
	var id [14]byte
	if _, err := io.ReadFull(rand.Reader, guid[:]); err != nil {
		return fmt.Errorf("personalizing PIV: %w", err)
	}
	if _, err := io.ReadFull(rand.Reader, id[:]); err != nil {
		return fmt.Errorf("personalizing PIV: %w", err)
	}
	chuid, err := NewCHUID(number, guid, cert.NotAfter)
	if err != nil {
		return fmt.Errorf("personalizing PIV: %w", err)
	}
	if err := c.PutCHUID(ctx, chuid); err != nil {
		return fmt.Errorf("personalizing PIV: %w", err)
	}
	if err := c.PutObject(ctx, ObjectCCC, cccContent(id)); err != nil {
		return fmt.Errorf("personalizing PIV: %w", err)
	}
	return nil
}
