// Package piv is the host side of the PIV applet: one typed method per
// applet command over a reader.Conn, the PIV data objects cardlink writes
// (certificates, CHUID, CCC), and Personalize, which `cardlink card new`
// runs. Status words come back as errors from package iso7816 (errors.Is
// with its sentinels, errors.As with *iso7816.PINError).
//
// It imports iso7816 and reader, never the applet itself: it knows the card
// only by docs/piv-applet.md (NIST SP 800-73-4 and the YubiKey extensions),
// so it works with any PIV card that implements that subset.
package piv

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/subtle"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"cardlink/internal/iso7816"
	"cardlink/internal/reader"
)

// AID is the PIV Card Application's AID (SP 800-73-4 Part 1 §2.2).
var AID = []byte{0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00}

// Factory defaults of a PIV card (and of a YubiKey). Change them.
var (
	// DefaultPIN is the PIN of a new card.
	DefaultPIN = "123456"
	// DefaultPUK is the PUK of a new card.
	DefaultPUK = "12345678"
	// DefaultManagementKey is the 3DES card management key of a new card.
	DefaultManagementKey = []byte{
		1, 2, 3, 4, 5, 6, 7, 8,
		1, 2, 3, 4, 5, 6, 7, 8,
		1, 2, 3, 4, 5, 6, 7, 8,
	}
)

// Instructions (SP 800-73-4 Part 2 §3; YubiKey extensions).
const (
	insSelect          = 0xA4
	insVerify          = 0x20
	insChangeReference = 0x24
	insResetRetry      = 0x2C
	insGenerate        = 0x47
	insAuthenticate    = 0x87
	insGetData         = 0xCB
	insPutData         = 0xDB
	insGetMetadata     = 0xF7
	insGetSerial       = 0xF8
	insGetVersion      = 0xFD
	insSetMgmtKey      = 0xFF

	refPIN  = 0x80
	refPUK  = 0x81
	refMgmt = 0x9B
)

// Tags (SP 800-73-4 Part 2).
const (
	tagAPT        iso7816.Tag = 0x61
	tagAID        iso7816.Tag = 0x4F
	tagAlgorithms iso7816.Tag = 0xAC
	tagAlgID      iso7816.Tag = 0x80
	tagPublicKey  iso7816.Tag = 0x7F49
	tagPoint      iso7816.Tag = 0x86
	tagDynAuth    iso7816.Tag = 0x7C
	tagWitness    iso7816.Tag = 0x80
	tagChallenge  iso7816.Tag = 0x81
	tagResponse   iso7816.Tag = 0x82
	tagExponent   iso7816.Tag = 0x85
	tagTagList    iso7816.Tag = 0x5C
	tagData       iso7816.Tag = 0x53
	tagCert       iso7816.Tag = 0x70
	tagCertInfo   iso7816.Tag = 0x71
	tagEDC        iso7816.Tag = 0xFE

	tagMetaAlgorithm iso7816.Tag = 0x01
	tagMetaRetries   iso7816.Tag = 0x06
)

// Data objects (SP 800-73-4 Part 1 Table 3) that cardlink reads or writes.
const (
	ObjectCHUID       iso7816.Tag = 0x5FC102
	ObjectCCC         iso7816.Tag = 0x5FC107
	ObjectPrintedInfo iso7816.Tag = 0x5FC109
	ObjectKeyHistory  iso7816.Tag = 0x5FC10C
	ObjectDiscovery   iso7816.Tag = 0x7E
)

// Algorithm is a PIV algorithm identifier (SP 800-78-4 Table 6-2).
type Algorithm byte

// Algorithms the cardlink PIV applet knows.
const (
	Alg3DES    Algorithm = 0x03
	AlgAES128  Algorithm = 0x08
	AlgAES192  Algorithm = 0x0A
	AlgAES256  Algorithm = 0x0C
	AlgECCP256 Algorithm = 0x11
)

// String names the algorithm, e.g. "3DES" or "ECCP256".
func (a Algorithm) String() string {
	switch a {
	case Alg3DES:
		return "3DES"
	case AlgAES128:
		return "AES128"
	case AlgAES192:
		return "AES192"
	case AlgAES256:
		return "AES256"
	case AlgECCP256:
		return "ECCP256"
	}
	return fmt.Sprintf("algorithm(%02X)", byte(a))
}

// keyLen is the key length of a management key algorithm, or 0.
func (a Algorithm) keyLen() int {
	switch a {
	case Alg3DES, AlgAES192:
		return 24
	case AlgAES128:
		return 16
	case AlgAES256:
		return 32
	}
	return 0
}

// Slot is an asymmetric key reference (SP 800-78-4 Table 6-1).
type Slot byte

// The four PIV key slots (retired key management slots are 82..95).
const (
	SlotAuthentication     Slot = 0x9A // PIN once per session
	SlotSignature          Slot = 0x9C // PIN before every use
	SlotKeyManagement      Slot = 0x9D // PIN once per session
	SlotCardAuthentication Slot = 0x9E // no PIN
)

// String gives the slot in hex, e.g. "9A".
func (s Slot) String() string { return fmt.Sprintf("%02X", byte(s)) }

// Object returns the tag of the slot's certificate object (SP 800-73-4
// Part 1 Table 3 and §3.3.1 for the retired slots); ok is false for a
// byte that names no slot.
func (s Slot) Object() (tag iso7816.Tag, ok bool) {
	switch s {
	case SlotAuthentication:
		return 0x5FC105, true
	case SlotSignature:
		return 0x5FC10A, true
	case SlotKeyManagement:
		return 0x5FC10B, true
	case SlotCardAuthentication:
		return 0x5FC101, true
	}
	if s >= 0x82 && s <= 0x95 {
		return 0x5FC10D + iso7816.Tag(s-0x82), true
	}
	return 0, false
}

// errMalformedReply is wrapped by errors about a card reply that does not
// follow SP 800-73-4.
var errMalformedReply = errors.New("malformed card reply")

// Client talks to the PIV applet on one card session. It is not safe for
// concurrent use (neither is the Conn under it).
type Client struct {
	conn reader.Conn
}

// Select selects the PIV applet on conn's basic channel and checks the
// Application Property Template it answers.
func Select(ctx context.Context, conn reader.Conn) (*Client, error) {
	apt, err := reader.Exchange(ctx, conn, iso7816.Command{INS: insSelect, P1: 0x04, Data: AID, Ne: 256})
	if err != nil {
		return nil, fmt.Errorf("selecting PIV applet: %w", err)
	}
	list, err := iso7816.ParseTLV(apt)
	if err != nil || len(list) != 1 || list[0].Tag != tagAPT {
		return nil, fmt.Errorf("selecting PIV applet: %w: APT % X", errMalformedReply, apt)
	}
	// The PIX starts 00 00 10 00; early cards sent the whole AID (as OpenSC
	// accepts).
	if pix, ok := iso7816.FindTLV(list[0].Children, tagAID); !ok || !bytes.HasPrefix(pix.Value, AID[5:9]) && !bytes.HasPrefix(pix.Value, AID[:9]) {
		return nil, fmt.Errorf("selecting PIV applet: %w: APT without the PIV AID", errMalformedReply)
	}
	return &Client{conn: conn}, nil
}

// exchange sends one command to the applet.
func (c *Client) exchange(ctx context.Context, ins, p1, p2 byte, data []byte, ne int) ([]byte, error) {
	return reader.Exchange(ctx, c.conn, iso7816.Command{INS: ins, P1: p1, P2: p2, Data: data, Ne: ne})
}

// Version returns what GET VERSION (YubiKey) answers: major, minor, patch.
func (c *Client) Version(ctx context.Context) ([3]byte, error) {
	b, err := c.exchange(ctx, insGetVersion, 0, 0, nil, 256)
	if err != nil {
		return [3]byte{}, fmt.Errorf("getting version: %w", err)
	}
	if len(b) != 3 {
		return [3]byte{}, fmt.Errorf("getting version: %w: % X", errMalformedReply, b)
	}
	return [3]byte(b), nil
}

// Serial returns the card's serial number (GET SERIAL, YubiKey).
func (c *Client) Serial(ctx context.Context) (uint32, error) {
	b, err := c.exchange(ctx, insGetSerial, 0, 0, nil, 256)
	if err != nil {
		return 0, fmt.Errorf("getting serial: %w", err)
	}
	if len(b) != 4 {
		return 0, fmt.Errorf("getting serial: %w: % X", errMalformedReply, b)
	}
	return binary.BigEndian.Uint32(b), nil
}

// refBlock pads a PIN or PUK of 6 to 8 bytes with FF to 8 bytes (SP
// 800-73-4 Part 2 §2.4.3). The card also requires a PIN of digits.
func refBlock(what, v string) ([]byte, error) {
	if len(v) < 6 || len(v) > 8 {
		return nil, fmt.Errorf("%s must be 6 to 8 characters", what)
	}
	b := bytes.Repeat([]byte{0xFF}, 8)
	copy(b, v)
	return b, nil
}

// VerifyPIN presents the PIN. A wrong PIN is a *iso7816.PINError with the
// tries left; a blocked PIN is iso7816.ErrBlocked.
func (c *Client) VerifyPIN(ctx context.Context, pin string) error {
	b, err := refBlock("PIN", pin)
	if err != nil {
		return fmt.Errorf("verifying PIN: %w", err)
	}
	if _, err := c.exchange(ctx, insVerify, 0, refPIN, b, 0); err != nil {
		return fmt.Errorf("verifying PIN: %w", err)
	}
	return nil
}

// PINVerified reports whether the PIN is verified in this session (an
// empty VERIFY). A blocked PIN is iso7816.ErrBlocked.
func (c *Client) PINVerified(ctx context.Context) (bool, error) {
	_, err := c.exchange(ctx, insVerify, 0, refPIN, nil, 0)
	var pe *iso7816.PINError
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &pe):
		return false, nil
	}
	return false, fmt.Errorf("getting PIN status: %w", err)
}

// ResetPINStatus ends the PIN's verification (VERIFY with P1 FF).
func (c *Client) ResetPINStatus(ctx context.Context) error {
	if _, err := c.exchange(ctx, insVerify, 0xFF, refPIN, nil, 0); err != nil {
		return fmt.Errorf("resetting PIN status: %w", err)
	}
	return nil
}

// Retries returns the try limit and the tries left of the PIN, or of the
// PUK when puk is true (GET METADATA, YubiKey).
func (c *Client) Retries(ctx context.Context, puk bool) (limit, left int, err error) {
	ref := byte(refPIN)
	if puk {
		ref = refPUK
	}
	b, err := c.exchange(ctx, insGetMetadata, 0, ref, nil, 256)
	if err != nil {
		return 0, 0, fmt.Errorf("getting retries: %w", err)
	}
	list, err := parseFlat(b)
	if err != nil {
		return 0, 0, fmt.Errorf("getting retries: %w: %w", errMalformedReply, err)
	}
	r, ok := iso7816.FindTLV(list, tagMetaRetries)
	if !ok || len(r.Value) != 2 {
		return 0, 0, fmt.Errorf("getting retries: %w: no retries in metadata", errMalformedReply)
	}
	return int(r.Value[0]), int(r.Value[1]), nil
}

// change sends CHANGE REFERENCE DATA or RESET RETRY COUNTER with two
// padded blocks.
func (c *Client) change(ctx context.Context, ins, ref byte, whatOld, old, whatNew, next string) error {
	a, err := refBlock(whatOld, old)
	if err != nil {
		return err
	}
	b, err := refBlock(whatNew, next)
	if err != nil {
		return err
	}
	_, err = c.exchange(ctx, ins, 0, ref, append(a, b...), 0)
	return err
}

// ChangePIN replaces the PIN; a wrong old PIN counts as a try.
func (c *Client) ChangePIN(ctx context.Context, oldPIN, newPIN string) error {
	if err := c.change(ctx, insChangeReference, refPIN, "PIN", oldPIN, "new PIN", newPIN); err != nil {
		return fmt.Errorf("changing PIN: %w", err)
	}
	return nil
}

// ChangePUK replaces the PUK; a wrong old PUK counts as a try.
func (c *Client) ChangePUK(ctx context.Context, oldPUK, newPUK string) error {
	if err := c.change(ctx, insChangeReference, refPUK, "PUK", oldPUK, "new PUK", newPUK); err != nil {
		return fmt.Errorf("changing PUK: %w", err)
	}
	return nil
}

// UnblockPIN sets a new PIN with the PUK (RESET RETRY COUNTER); a wrong
// PUK counts as a PUK try.
func (c *Client) UnblockPIN(ctx context.Context, puk, newPIN string) error {
	if err := c.change(ctx, insResetRetry, refPIN, "PUK", puk, "new PIN", newPIN); err != nil {
		return fmt.Errorf("unblocking PIN: %w", err)
	}
	return nil
}

// ManagementKeyAlgorithm returns the algorithm of the card management key
// (GET METADATA 9B); a card without GET METADATA is taken to have 3DES.
func (c *Client) ManagementKeyAlgorithm(ctx context.Context) (Algorithm, error) {
	b, err := c.exchange(ctx, insGetMetadata, 0, refMgmt, nil, 256)
	if errors.Is(err, iso7816.ErrUnsupported) {
		return Alg3DES, nil
	}
	if err != nil {
		return 0, fmt.Errorf("getting management key metadata: %w", err)
	}
	list, err := parseFlat(b)
	if err != nil {
		return 0, fmt.Errorf("getting management key metadata: %w: %w", errMalformedReply, err)
	}
	a, ok := iso7816.FindTLV(list, tagMetaAlgorithm)
	if !ok || len(a.Value) != 1 || Algorithm(a.Value[0]).keyLen() == 0 {
		return 0, fmt.Errorf("getting management key metadata: %w: algorithm % X", errMalformedReply, a.Value)
	}
	return Algorithm(a.Value[0]), nil
}

// newBlock returns the block cipher of a management key.
func newBlock(alg Algorithm, key []byte) (cipher.Block, error) {
	if len(key) != alg.keyLen() {
		return nil, fmt.Errorf("%s management key must be %d bytes, not %d", alg, alg.keyLen(), len(key))
	}
	if alg == Alg3DES {
		return des.NewTripleDESCipher(key)
	}
	return aes.NewCipher(key)
}

// AuthenticateManagementKey runs the mutual authentication with the card
// management key (GENERAL AUTHENTICATE 9B, SP 800-73-4 Part 2 Appendix
// A.2): the card proves it holds the key too. Until the card is reset, the
// session may then GENERATE, IMPORT and PUT DATA. A wrong key is
// iso7816.ErrSecurityStatus.
func (c *Client) AuthenticateManagementKey(ctx context.Context, key []byte) error {
	alg, err := c.ManagementKeyAlgorithm(ctx)
	if err != nil {
		return fmt.Errorf("authenticating management key: %w", err)
	}
	block, err := newBlock(alg, key)
	if err != nil {
		return fmt.Errorf("authenticating management key: %w", err)
	}
	bs := block.BlockSize()
	req := iso7816.AppendTLV(nil, tagDynAuth, iso7816.AppendTLV(nil, tagWitness, nil))
	resp, err := c.exchange(ctx, insAuthenticate, byte(alg), refMgmt, req, 256)
	if err != nil {
		return fmt.Errorf("authenticating management key: %w", err)
	}
	enc, err := dynAuthValue(resp, tagWitness, bs)
	if err != nil {
		return fmt.Errorf("authenticating management key: %w", err)
	}
	witness := make([]byte, bs)
	block.Decrypt(witness, enc)
	challenge := make([]byte, bs)
	if _, err := io.ReadFull(rand.Reader, challenge); err != nil {
		return fmt.Errorf("authenticating management key: %w", err)
	}
	body := iso7816.AppendTLV(nil, tagWitness, witness)
	body = iso7816.AppendTLV(body, tagChallenge, challenge)
	resp, err = c.exchange(ctx, insAuthenticate, byte(alg), refMgmt, iso7816.AppendTLV(nil, tagDynAuth, body), 256)
	if err != nil {
		return fmt.Errorf("authenticating management key: %w", err)
	}
	got, err := dynAuthValue(resp, tagResponse, bs)
	if err != nil {
		return fmt.Errorf("authenticating management key: %w", err)
	}
	want := make([]byte, bs)
	block.Encrypt(want, challenge)
	if subtle.ConstantTimeCompare(got, want) != 1 {
		return errors.New("authenticating management key: the card's response is wrong: it does not hold this key")
	}
	return nil
}

// dynAuthValue extracts the value of tag from 7C { tag value }; n > 0
// requires that length.
func dynAuthValue(b []byte, tag iso7816.Tag, n int) ([]byte, error) {
	inner, err := parseFlatOne(b, tagDynAuth)
	if err != nil {
		return nil, fmt.Errorf("%w: % X", errMalformedReply, b)
	}
	list, err := parseFlat(inner)
	if err != nil {
		return nil, fmt.Errorf("%w: % X", errMalformedReply, b)
	}
	v, ok := iso7816.FindTLV(list, tag)
	if !ok || n > 0 && len(v.Value) != n || len(v.Value) == 0 {
		return nil, fmt.Errorf("%w: no %s in % X", errMalformedReply, tag, b)
	}
	return v.Value, nil
}

// SetManagementKey replaces the card management key (SET MANAGEMENT KEY,
// YubiKey). The session must have authenticated with the current key.
func (c *Client) SetManagementKey(ctx context.Context, alg Algorithm, key []byte) error {
	if _, err := newBlock(alg, key); err != nil {
		return fmt.Errorf("setting management key: %w", err)
	}
	data := append([]byte{byte(alg), refMgmt, byte(len(key))}, key...)
	if _, err := c.exchange(ctx, insSetMgmtKey, 0xFF, 0xFF, data, 0); err != nil {
		return fmt.Errorf("setting management key: %w", err)
	}
	return nil
}

// GenerateKey makes a new P-256 key pair in slot, with the slot's default
// PIN policy, and returns its public key. It needs the management key.
func (c *Client) GenerateKey(ctx context.Context, slot Slot) (*ecdsa.PublicKey, error) {
	req := iso7816.AppendTLV(nil, tagAlgorithms, iso7816.AppendTLV(nil, tagAlgID, []byte{byte(AlgECCP256)}))
	b, err := c.exchange(ctx, insGenerate, 0, byte(slot), req, 256)
	if err != nil {
		return nil, fmt.Errorf("generating key in slot %s: %w", slot, err)
	}
	pub, err := parsePublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("generating key in slot %s: %w", slot, err)
	}
	return pub, nil
}

// parsePublicKey decodes 7F49 { 86 point } for P-256.
func parsePublicKey(b []byte) (*ecdsa.PublicKey, error) {
	inner, err := parseFlatOne(b, tagPublicKey)
	if err != nil {
		return nil, fmt.Errorf("%w: public key % X", errMalformedReply, b)
	}
	list, err := parseFlat(inner)
	if err != nil {
		return nil, fmt.Errorf("%w: public key % X", errMalformedReply, b)
	}
	p, ok := iso7816.FindTLV(list, tagPoint)
	if !ok {
		return nil, fmt.Errorf("%w: public key without point", errMalformedReply)
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), p.Value)
	if err != nil {
		return nil, fmt.Errorf("%w: public point: %w", errMalformedReply, err)
	}
	return pub, nil
}

// PutObject writes a data object (PUT DATA): content becomes the value of
// its 53 template. It needs the management key. Empty content deletes the
// object.
func (c *Client) PutObject(ctx context.Context, tag iso7816.Tag, content []byte) error {
	data := iso7816.AppendTLV(nil, tagTagList, tagBytes(tag))
	data = iso7816.AppendTLV(data, tagData, content)
	if _, err := c.exchange(ctx, insPutData, 0x3F, 0xFF, data, 0); err != nil {
		return fmt.Errorf("putting object %s: %w", tag, err)
	}
	return nil
}

// Object reads a data object (GET DATA) and returns the value of its 53
// template (of its 7E template for the Discovery Object). An absent
// object is iso7816.ErrNotFound.
func (c *Client) Object(ctx context.Context, tag iso7816.Tag) ([]byte, error) {
	req := iso7816.AppendTLV(nil, tagTagList, tagBytes(tag))
	b, err := c.exchange(ctx, insGetData, 0x3F, 0xFF, req, 256)
	if err != nil {
		return nil, fmt.Errorf("getting object %s: %w", tag, err)
	}
	want := tagData
	if tag == ObjectDiscovery {
		want = ObjectDiscovery
	}
	v, err := parseFlatOne(b, want)
	if err != nil {
		return nil, fmt.Errorf("getting object %s: %w: %w", tag, errMalformedReply, err)
	}
	return v, nil
}

// tagBytes encodes a tag of one to three bytes.
func tagBytes(t iso7816.Tag) []byte {
	switch {
	case t > 0xFFFF:
		return []byte{byte(t >> 16), byte(t >> 8), byte(t)}
	case t > 0xFF:
		return []byte{byte(t >> 8), byte(t)}
	}
	return []byte{byte(t)}
}

// PutCertificate writes cert to slot's certificate object
// (70 DER, 71 00 uncompressed, FE error detection code; SP 800-73-4 Part 1
// Table 15). It needs the management key.
func (c *Client) PutCertificate(ctx context.Context, slot Slot, cert *x509.Certificate) error {
	tag, ok := slot.Object()
	if !ok {
		return fmt.Errorf("putting certificate: no slot %s", slot)
	}
	content := iso7816.AppendTLV(nil, tagCert, cert.Raw)
	content = iso7816.AppendTLV(content, tagCertInfo, []byte{0})
	content = iso7816.AppendTLV(content, tagEDC, nil)
	if err := c.PutObject(ctx, tag, content); err != nil {
		return fmt.Errorf("putting certificate in slot %s: %w", slot, err)
	}
	return nil
}

// Certificate reads slot's certificate. No certificate is
// iso7816.ErrNotFound; a compressed one (71 01) is refused.
func (c *Client) Certificate(ctx context.Context, slot Slot) (*x509.Certificate, error) {
	tag, ok := slot.Object()
	if !ok {
		return nil, fmt.Errorf("getting certificate: no slot %s", slot)
	}
	content, err := c.Object(ctx, tag)
	if err != nil {
		return nil, fmt.Errorf("getting certificate of slot %s: %w", slot, err)
	}
	cert, err := ParseCertificateObject(content)
	if err != nil {
		return nil, fmt.Errorf("getting certificate of slot %s: %w", slot, err)
	}
	return cert, nil
}

// ParseCertificateObject decodes the content of a certificate object:
// 70 DER certificate, optional 71 CertInfo (must be 00, uncompressed),
// optional FE.
func ParseCertificateObject(content []byte) (*x509.Certificate, error) {
	list, err := parseFlat(content)
	if err != nil {
		return nil, fmt.Errorf("%w: certificate object: %w", errMalformedReply, err)
	}
	der, ok := iso7816.FindTLV(list, tagCert)
	if !ok {
		return nil, fmt.Errorf("%w: certificate object without 70", errMalformedReply)
	}
	if info, ok := iso7816.FindTLV(list, tagCertInfo); ok && (len(info.Value) != 1 || info.Value[0] != 0) {
		return nil, fmt.Errorf("%w: compressed or unknown certificate encoding % X", errMalformedReply, info.Value)
	}
	cert, err := x509.ParseCertificate(der.Value)
	if err != nil {
		return nil, fmt.Errorf("parsing certificate: %w", err)
	}
	return cert, nil
}

// Sign signs digest (1 to 32 bytes, the hash of the message) with the key
// in slot (GENERAL AUTHENTICATE, ECDSA P-256) and returns the ASN.1 DER
// signature. The slot's PIN policy applies: VerifyPIN first as it needs.
func (c *Client) Sign(ctx context.Context, slot Slot, digest []byte) ([]byte, error) {
	if len(digest) == 0 || len(digest) > 32 {
		return nil, fmt.Errorf("signing with slot %s: digest of %d bytes, want 1 to 32", slot, len(digest))
	}
	body := iso7816.AppendTLV(nil, tagResponse, nil)
	body = iso7816.AppendTLV(body, tagChallenge, digest)
	b, err := c.exchange(ctx, insAuthenticate, byte(AlgECCP256), byte(slot), iso7816.AppendTLV(nil, tagDynAuth, body), 256)
	if err != nil {
		return nil, fmt.Errorf("signing with slot %s: %w", slot, err)
	}
	sig, err := dynAuthValue(b, tagResponse, 0)
	if err != nil {
		return nil, fmt.Errorf("signing with slot %s: %w", slot, err)
	}
	return sig, nil
}

// SharedKey agrees a key with peer using the key in slot (GENERAL
// AUTHENTICATE with tag 85, ECDH P-256) and returns the shared X
// coordinate. The slot's PIN policy applies.
func (c *Client) SharedKey(ctx context.Context, slot Slot, peer *ecdh.PublicKey) ([]byte, error) {
	if peer.Curve() != ecdh.P256() {
		return nil, fmt.Errorf("agreeing key with slot %s: peer key is not P-256", slot)
	}
	body := iso7816.AppendTLV(nil, tagResponse, nil)
	body = iso7816.AppendTLV(body, tagExponent, peer.Bytes())
	b, err := c.exchange(ctx, insAuthenticate, byte(AlgECCP256), byte(slot), iso7816.AppendTLV(nil, tagDynAuth, body), 256)
	if err != nil {
		return nil, fmt.Errorf("agreeing key with slot %s: %w", slot, err)
	}
	s, err := dynAuthValue(b, tagResponse, 32)
	if err != nil {
		return nil, fmt.Errorf("agreeing key with slot %s: %w", slot, err)
	}
	return s, nil
}
