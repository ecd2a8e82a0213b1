// Package wallet is the host side of the wallet applet: one typed method per
// applet command over a reader.Conn, for the device, the CLI and tests.
// Status words come back as errors from package iso7816 (errors.Is with its
// sentinels, errors.As with *iso7816.PINError).
//
// It imports iso7816, reader, txn and money, never the applet itself: it
// knows the card only by docs/wallet-applet.md.
package wallet

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"

	"cardlink/internal/iso7816"
	"cardlink/internal/money"
	"cardlink/internal/reader"
	"cardlink/internal/txn"
)

// AID is the wallet applet's application identifier.
var AID = []byte{0xF0, 0x63, 0x61, 0x72, 0x64, 0x6C, 0x6E, 0x6B, 0x01}

// Instructions of the core commands (docs/wallet-applet.md).
const (
	claISO         = 0x00
	claProprietary = 0x80

	insSelect          = 0xA4
	insVerify          = 0x20
	insChangeReference = 0x24
	insResetRetry      = 0x2C
	insGenerateKey     = 0x47
	insInternalAuth    = 0x88
	insReadRecord      = 0xB2
	insGetData         = 0xCA
	insPutData         = 0xDA
	insSignTransaction = 0xA0
	insEndPerso        = 0xF0

	refPIN = 0x81
	refBio = 0x91

	p2ReadLog = 0x0C // SFI 1, P1 is a record number

	// P1 of INTERNAL AUTHENTICATE and SIGN TRANSACTION: who verifies the
	// holder.
	p1OnCard    = 0x00 // the card (offline PIN or biometric), if anyone
	p1OnlinePIN = 0x02 // the server, from an encrypted PIN block
)

// Data object tags (docs/wallet-applet.md, "Tags").
const (
	tagCardNumber   iso7816.Tag = 0x5A
	tagCounter      iso7816.Tag = 0x9F36
	tagPINTries     iso7816.Tag = 0x9F17
	tagBioTries     iso7816.Tag = 0xDF21
	tagPUKTries     iso7816.Tag = 0xDF22
	tagCertificate  iso7816.Tag = 0xDF20
	tagCAKeyID      iso7816.Tag = 0xDF23
	tagOpsKeyID     iso7816.Tag = 0xDF24
	tagLifecycle    iso7816.Tag = 0xDF25
	tagOpsKey       iso7816.Tag = 0xDF26
	tagPIN          iso7816.Tag = 0xDF27
	tagPUK          iso7816.Tag = 0xDF28
	tagBioTemplate  iso7816.Tag = 0xDF29
	tagBioThreshold iso7816.Tag = 0xDF2A
	tagCVM          iso7816.Tag = 0x9F34
	tagSignature    iso7816.Tag = 0x9F4B
	tagLogCapacity  iso7816.Tag = 0xDF50
	tagLogUsed      iso7816.Tag = 0xDF51

	tagFCI         iso7816.Tag = 0x6F
	tagDFName      iso7816.Tag = 0x84
	tagFCIProp     iso7816.Tag = 0xA5
	tagAppLabel    iso7816.Tag = 0x50
	tagPublicKey   iso7816.Tag = 0x7F49
	tagPublicPoint iso7816.Tag = 0x86

	tagChallenge iso7816.Tag = 0x80
	tagContext   iso7816.Tag = 0x81

	tagLogRecord  iso7816.Tag = 0x70
	tagLogPurpose iso7816.Tag = 0x80
	tagLogCounter iso7816.Tag = 0x82
	tagLogCVM     iso7816.Tag = 0x83
	tagLogPayload iso7816.Tag = 0x84
)

// BioTemplateLen is the size of a biometric template: 512 bits, matched on
// the card by Hamming distance (docs/wallet-applet.md).
const BioTemplateLen = 64

// ChallengeLen is the size of an INTERNAL AUTHENTICATE challenge;
// MaxContextLen bounds the optional context bound into the signature.
const (
	ChallengeLen  = 32
	MaxContextLen = 64
)

// errMalformedReply is wrapped by errors about a card reply that does not
// follow docs/wallet-applet.md.
var errMalformedReply = errors.New("malformed card reply")

// Client talks to the wallet applet on one card session. It is not safe
// for concurrent use (neither is the Conn under it).
type Client struct {
	conn reader.Conn
}

// Lifecycle is the applet's lifecycle state (tag DF25).
type Lifecycle byte

// Lifecycle states.
const (
	Personalizing Lifecycle = 0
	Operational   Lifecycle = 1
)

// String returns "personalizing", "operational" or "lifecycle(N)".
func (l Lifecycle) String() string {
	switch l {
	case Personalizing:
		return "personalizing"
	case Operational:
		return "operational"
	}
	return fmt.Sprintf("lifecycle(%d)", byte(l))
}

// Select selects the wallet applet on conn's basic channel and checks its
// FCI.
func Select(ctx context.Context, conn reader.Conn) (*Client, error) {
	fci, err := reader.Exchange(ctx, conn, iso7816.Command{CLA: claISO, INS: insSelect, P1: 0x04, P2: 0x00, Data: AID, Ne: 256})
	if err != nil {
		return nil, fmt.Errorf("selecting wallet applet: %w", err)
	}
	if _, err := parseFCI(fci); err != nil {
		return nil, fmt.Errorf("selecting wallet applet: %w", err)
	}
	return &Client{conn: conn}, nil
}

// parseFCI checks 6F { 84 AID, A5 { 50 label, DF25 state } } and returns the
// lifecycle state.
func parseFCI(b []byte) (Lifecycle, error) {
	list, err := iso7816.ParseTLV(b)
	if err != nil || len(list) != 1 || list[0].Tag != tagFCI {
		return 0, fmt.Errorf("%w: FCI % X", errMalformedReply, b)
	}
	name, ok1 := iso7816.FindTLV(list[0].Children, tagDFName)
	prop, ok2 := iso7816.FindTLV(list[0].Children, tagFCIProp)
	if !ok1 || !ok2 || !bytes.Equal(name.Value, AID) {
		return 0, fmt.Errorf("%w: FCI % X", errMalformedReply, b)
	}
	st, ok := iso7816.FindTLV(prop.Children, tagLifecycle)
	if !ok || len(st.Value) != 1 {
		return 0, fmt.Errorf("%w: FCI without lifecycle", errMalformedReply)
	}
	return Lifecycle(st.Value[0]), nil
}

// exchange sends one command to the applet.
func (c *Client) exchange(ctx context.Context, cla, ins, p1, p2 byte, data []byte, ne int) ([]byte, error) {
	return reader.Exchange(ctx, c.conn, iso7816.Command{CLA: cla, INS: ins, P1: p1, P2: p2, Data: data, Ne: ne})
}

// GetData reads one data object with GET DATA (00 CA, P1-P2 = tag); the
// card replies with the bare value. A tag the card does not have is
// iso7816.ErrNotFound.
func (c *Client) GetData(ctx context.Context, tag iso7816.Tag) ([]byte, error) {
	if tag > 0xFFFF {
		return nil, fmt.Errorf("getting data %s: tag longer than two bytes", tag)
	}
	b, err := c.exchange(ctx, claISO, insGetData, byte(tag>>8), byte(tag), nil, 256)
	if err != nil {
		return nil, fmt.Errorf("getting data %s: %w", tag, err)
	}
	return b, nil
}

// putData writes one data object with PUT DATA (00 DA, P1-P2 = tag).
func (c *Client) putData(ctx context.Context, tag iso7816.Tag, v []byte) error {
	if _, err := c.exchange(ctx, claISO, insPutData, byte(tag>>8), byte(tag), v, 0); err != nil {
		return fmt.Errorf("putting data %s: %w", tag, err)
	}
	return nil
}

// Personalization is what an issuer writes into a blank card.
type Personalization struct {
	CardNumber  string // 16 digits, Luhn-valid
	PIN         string // 4..12 digits
	PUK         string // 8 digits
	BioTemplate []byte // optional enrolled biometric template (BioTemplateLen bytes)
	// BioThreshold is the largest Hamming distance in bits at which a
	// presented template matches; 0 leaves the card's default (64 bits).
	BioThreshold int
	Currency     money.Currency
	// MaxBalance is the purse's ceiling in minor units of Currency; 0
	// leaves the card's default (no ceiling below 2^63-1).
	MaxBalance int64
	// IssuerKeyID identifies the CA key that issued the card certificate.
	IssuerKeyID []byte
	// IssuerSigner is the issuer's operations public key, which the card
	// uses to check purse loads and e-goods; OpsKeyID identifies it.
	IssuerSigner *ecdsa.PublicKey
	OpsKeyID     []byte
}

// validate checks p before anything is written to the card.
func (p *Personalization) validate() error {
	if err := txn.ValidCardNumber(p.CardNumber); err != nil {
		return err
	}
	if _, err := PINBlock(p.PIN); err != nil {
		return fmt.Errorf("PIN: %w", err)
	}
	if len(p.PUK) != 8 {
		return errors.New("PUK: want 8 digits")
	}
	if _, err := PINBlock(p.PUK); err != nil {
		return fmt.Errorf("PUK: %w", err)
	}
	if p.BioTemplate != nil && len(p.BioTemplate) != BioTemplateLen {
		return fmt.Errorf("biometric template: %d bytes, want %d", len(p.BioTemplate), BioTemplateLen)
	}
	if p.BioThreshold < 0 || p.BioThreshold > 128 {
		return fmt.Errorf("biometric threshold %d: want 0..128 bits", p.BioThreshold)
	}
	if _, err := money.ParseCurrency(string(p.Currency)); err != nil {
		return err
	}
	if p.MaxBalance < 0 {
		return fmt.Errorf("max balance %d is negative", p.MaxBalance)
	}
	if len(p.IssuerKeyID) == 0 || len(p.IssuerKeyID) > 32 || len(p.OpsKeyID) == 0 || len(p.OpsKeyID) > 32 {
		return errors.New("key ids: want 1..32 bytes each")
	}
	if p.IssuerSigner == nil || p.IssuerSigner.Curve != elliptic.P256() {
		return errors.New("issuer operations key: want a P-256 key")
	}
	return nil
}

// Personalize generates the card's key pair on the card, asks issue for a
// certificate over the public key, writes everything in p, and ends
// personalization (after which none of this can be changed). A card that
// is already operational refuses with iso7816.ErrConditions.
func (c *Client) Personalize(ctx context.Context, p Personalization, issue func(pub *ecdsa.PublicKey) (*x509.Certificate, error)) error {
	if err := p.validate(); err != nil {
		return fmt.Errorf("personalizing card: %w", err)
	}
	resp, err := c.exchange(ctx, claISO, insGenerateKey, 0, 0, nil, 256)
	if err != nil {
		return fmt.Errorf("generating card key: %w", err)
	}
	pub, err := parsePublicKey(resp)
	if err != nil {
		return fmt.Errorf("generating card key: %w", err)
	}
	cert, err := issue(pub)
	if err != nil {
		return fmt.Errorf("issuing card certificate: %w", err)
	}
	if cp, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || !cp.Equal(pub) {
		return errors.New("issuing card certificate: certificate is not for the card's key")
	}
	pin, _ := PINBlock(p.PIN)
	puk, _ := PINBlock(p.PUK)
	ops, err := p.IssuerSigner.Bytes()
	if err != nil {
		return fmt.Errorf("personalizing card: issuer operations key: %w", err)
	}
	objs := []struct {
		tag iso7816.Tag
		v   []byte
	}{
		{tagCardNumber, txn.CardNumberBCD(p.CardNumber)},
		{tagCertificate, cert.Raw},
		{tagCAKeyID, p.IssuerKeyID},
		{tagOpsKeyID, p.OpsKeyID},
		{tagOpsKey, ops},
		{tagPIN, pin},
		{tagPUK, puk},
		{0xDF31, []byte(p.Currency)},
	}
	if p.MaxBalance > 0 {
		objs = append(objs, struct {
			tag iso7816.Tag
			v   []byte
		}{0xDF33, binary.BigEndian.AppendUint64(nil, uint64(p.MaxBalance))})
	}
	if p.BioThreshold > 0 {
		objs = append(objs, struct {
			tag iso7816.Tag
			v   []byte
		}{tagBioThreshold, []byte{byte(p.BioThreshold)}})
	}
	if p.BioTemplate != nil {
		objs = append(objs, struct {
			tag iso7816.Tag
			v   []byte
		}{tagBioTemplate, p.BioTemplate})
	}
	for _, o := range objs {
		if err := c.putData(ctx, o.tag, o.v); err != nil {
			return fmt.Errorf("personalizing card: %w", err)
		}
	}
	if _, err := c.exchange(ctx, claProprietary, insEndPerso, 0, 0, nil, 0); err != nil {
		return fmt.Errorf("ending personalization: %w", err)
	}
	return nil
}

// parsePublicKey decodes GENERATE KEY's reply 7F49 { 86 point }.
func parsePublicKey(b []byte) (*ecdsa.PublicKey, error) {
	list, err := iso7816.ParseTLV(b)
	if err != nil || len(list) != 1 || list[0].Tag != tagPublicKey {
		return nil, fmt.Errorf("%w: public key % X", errMalformedReply, b)
	}
	pt, ok := iso7816.FindTLV(list[0].Children, tagPublicPoint)
	if !ok {
		return nil, fmt.Errorf("%w: public key without point", errMalformedReply)
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), pt.Value)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errMalformedReply, err)
	}
	return pub, nil
}

// Info is everything about a card that is not secret, as GET DATA shows
// it. Fields the card does not hold yet (during personalization) are zero.
type Info struct {
	CardNumber  string
	Lifecycle   Lifecycle
	Certificate *x509.Certificate
	CAKeyID     []byte
	OpsKeyID    []byte
	OpsKey      *ecdsa.PublicKey
	Counter     uint32 // transaction counter: signatures made so far
	PINTries    int    // tries left
	PUKTries    int
	// BioEnrolled reports whether a biometric template is enrolled;
	// BioTries and BioThreshold are meaningful only then.
	BioEnrolled  bool
	BioTries     int
	BioThreshold int
	LogCapacity  int
	LogUsed      int
}

// Info reads the card's public data objects.
func (c *Client) Info(ctx context.Context) (Info, error) {
	var in Info
	get := func(tag iso7816.Tag, n int) ([]byte, bool, error) {
		v, err := c.GetData(ctx, tag)
		if errors.Is(err, iso7816.ErrNotFound) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, fmt.Errorf("reading card info: %w", err)
		}
		if n > 0 && len(v) != n {
			return nil, false, fmt.Errorf("reading card info: %w: %s is %d bytes, want %d", errMalformedReply, tag, len(v), n)
		}
		return v, true, nil
	}
	v, ok, err := get(tagLifecycle, 1)
	if err != nil {
		return Info{}, err
	}
	if ok {
		in.Lifecycle = Lifecycle(v[0])
	}
	if v, ok, err = get(tagCardNumber, 8); err != nil {
		return Info{}, err
	} else if ok {
		if in.CardNumber, err = txn.ParseCardNumberBCD(v); err != nil {
			return Info{}, fmt.Errorf("reading card info: %w: %w", errMalformedReply, err)
		}
	}
	if v, ok, err = get(tagCertificate, 0); err != nil {
		return Info{}, err
	} else if ok {
		if in.Certificate, err = x509.ParseCertificate(v); err != nil {
			return Info{}, fmt.Errorf("reading card info: parsing certificate: %w", err)
		}
	}
	if in.CAKeyID, _, err = get(tagCAKeyID, 0); err != nil {
		return Info{}, err
	}
	if in.OpsKeyID, _, err = get(tagOpsKeyID, 0); err != nil {
		return Info{}, err
	}
	if v, ok, err = get(tagOpsKey, 65); err != nil {
		return Info{}, err
	} else if ok {
		if in.OpsKey, err = ecdsa.ParseUncompressedPublicKey(elliptic.P256(), v); err != nil {
			return Info{}, fmt.Errorf("reading card info: %w: %w", errMalformedReply, err)
		}
	}
	if v, ok, err = get(tagCounter, 4); err != nil {
		return Info{}, err
	} else if ok {
		in.Counter = binary.BigEndian.Uint32(v)
	}
	bytes1 := []struct {
		tag iso7816.Tag
		dst *int
		ok  *bool
	}{
		{tagPINTries, &in.PINTries, nil},
		{tagPUKTries, &in.PUKTries, nil},
		{tagBioTries, &in.BioTries, &in.BioEnrolled},
		{tagBioThreshold, &in.BioThreshold, nil},
		{tagLogCapacity, &in.LogCapacity, nil},
		{tagLogUsed, &in.LogUsed, nil},
	}
	for _, f := range bytes1 {
		v, ok, err := get(f.tag, 1)
		if err != nil {
			return Info{}, err
		}
		if ok {
			*f.dst = int(v[0])
		}
		if f.ok != nil {
			*f.ok = ok
		}
	}
	return in, nil
}

// Certificate reads and parses the card's certificate (GET DATA DF20).
func (c *Client) Certificate(ctx context.Context) (*x509.Certificate, error) {
	der, err := c.GetData(ctx, tagCertificate)
	if err != nil {
		return nil, fmt.Errorf("reading card certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("reading card certificate: %w", err)
	}
	return cert, nil
}

// Counter reads the card's transaction counter (GET DATA 9F36).
func (c *Client) Counter(ctx context.Context) (uint32, error) {
	v, err := c.GetData(ctx, tagCounter)
	if err != nil {
		return 0, fmt.Errorf("reading counter: %w", err)
	}
	if len(v) != 4 {
		return 0, fmt.Errorf("reading counter: %w: %d bytes", errMalformedReply, len(v))
	}
	return binary.BigEndian.Uint32(v), nil
}

// PINBlock encodes pin (4..12 decimal digits) as an ISO 9564-1 format 2
// PIN block: 2N, the digits in BCD, F filler, 8 bytes.
func PINBlock(pin string) ([]byte, error) {
	if len(pin) < 4 || len(pin) > 12 {
		return nil, fmt.Errorf("PIN of %d digits, want 4..12", len(pin))
	}
	b := bytes.Repeat([]byte{0xFF}, 8)
	b[0] = 0x20 | byte(len(pin))
	for i := 0; i < len(pin); i++ {
		d := pin[i]
		if d < '0' || d > '9' {
			return nil, errors.New("PIN has a character that is not a decimal digit")
		}
		shift := 4 * (1 - i%2)
		b[1+i/2] = b[1+i/2]&^(0x0F<<shift) | (d-'0')<<shift
	}
	return b, nil
}

// VerifyPIN presents the PIN (VERIFY 00 20 00 81). A wrong PIN is a
// *iso7816.PINError with the tries left; a blocked PIN iso7816.ErrBlocked.
// Success covers the next card signature.
func (c *Client) VerifyPIN(ctx context.Context, pin string) error {
	b, err := PINBlock(pin)
	if err != nil {
		return fmt.Errorf("verifying PIN: %w", err)
	}
	if _, err := c.exchange(ctx, claISO, insVerify, 0, refPIN, b, 0); err != nil {
		return fmt.Errorf("verifying PIN: %w", err)
	}
	return nil
}

// VerifyBiometric presents a biometric template (VERIFY 00 20 00 91), with
// the errors of VerifyPIN.
func (c *Client) VerifyBiometric(ctx context.Context, template []byte) error {
	if len(template) != BioTemplateLen {
		return fmt.Errorf("verifying biometric: template of %d bytes, want %d", len(template), BioTemplateLen)
	}
	if _, err := c.exchange(ctx, claISO, insVerify, 0, refBio, template, 0); err != nil {
		return fmt.Errorf("verifying biometric: %w", err)
	}
	return nil
}

// VerificationStatus is the answer to a VERIFY without data.
type VerificationStatus struct {
	Verified  bool // verified in this session
	TriesLeft int  // meaningful when not verified
}

// PINStatus asks whether the PIN was verified in this session (VERIFY with
// no data). A blocked PIN is iso7816.ErrBlocked.
func (c *Client) PINStatus(ctx context.Context) (VerificationStatus, error) {
	return c.status(ctx, refPIN)
}

// BiometricStatus is PINStatus for the biometric; a card without an
// enrolled template answers iso7816.ErrNotFound.
func (c *Client) BiometricStatus(ctx context.Context) (VerificationStatus, error) {
	return c.status(ctx, refBio)
}

func (c *Client) status(ctx context.Context, ref byte) (VerificationStatus, error) {
	_, err := c.exchange(ctx, claISO, insVerify, 0, ref, nil, 0)
	var pe *iso7816.PINError
	switch {
	case err == nil:
		return VerificationStatus{Verified: true}, nil
	case errors.As(err, &pe):
		return VerificationStatus{TriesLeft: pe.Retries}, nil
	}
	return VerificationStatus{}, fmt.Errorf("reading verification status: %w", err)
}

// ResetVerification forgets the PIN and biometric verification of this
// session (VERIFY with P1 FF), including a pending one.
func (c *Client) ResetVerification(ctx context.Context) error {
	for _, ref := range []byte{refPIN, refBio} {
		if _, err := c.exchange(ctx, claISO, insVerify, 0xFF, ref, nil, 0); err != nil {
			return fmt.Errorf("resetting verification: %w", err)
		}
	}
	return nil
}

// ChangePIN replaces the PIN (CHANGE REFERENCE DATA 00 24 00 81). A wrong
// old PIN counts as a failed try, with the errors of VerifyPIN.
func (c *Client) ChangePIN(ctx context.Context, oldPIN, newPIN string) error {
	o, err := PINBlock(oldPIN)
	if err != nil {
		return fmt.Errorf("changing PIN: old PIN: %w", err)
	}
	n, err := PINBlock(newPIN)
	if err != nil {
		return fmt.Errorf("changing PIN: new PIN: %w", err)
	}
	if _, err := c.exchange(ctx, claISO, insChangeReference, 0, refPIN, append(o, n...), 0); err != nil {
		return fmt.Errorf("changing PIN: %w", err)
	}
	return nil
}

// UnblockPIN sets a new PIN and resets its try counter with the PUK (RESET
// RETRY COUNTER 00 2C 00 81). A wrong PUK is a *iso7816.PINError with the
// PUK tries left; a blocked PUK is iso7816.ErrBlocked.
func (c *Client) UnblockPIN(ctx context.Context, puk, newPIN string) error {
	p, err := PINBlock(puk)
	if err != nil {
		return fmt.Errorf("unblocking PIN: PUK: %w", err)
	}
	n, err := PINBlock(newPIN)
	if err != nil {
		return fmt.Errorf("unblocking PIN: new PIN: %w", err)
	}
	if _, err := c.exchange(ctx, claISO, insResetRetry, 0, refPIN, append(p, n...), 0); err != nil {
		return fmt.Errorf("unblocking PIN: %w", err)
	}
	return nil
}

// Signature is a card signature and what it covers besides the payload.
type Signature struct {
	Counter uint32  // the card's transaction counter after incrementing
	CVM     txn.CVM // how the holder was verified
	Sig     []byte  // ASN.1 DER ECDSA P-256 over SHA-256 of the envelope
}

// Envelope returns what s.Sig covers for the given purpose, card and payload.
func (s Signature) Envelope(p txn.Purpose, cardNumber string, payload []byte) *txn.Envelope {
	return &txn.Envelope{Purpose: p, CardNumber: cardNumber, Counter: s.Counter, CVM: s.CVM, Payload: payload}
}

// parseSignature decodes 9F36 counter, 9F34 CVM, 9F4B signature.
func parseSignature(b []byte) (Signature, error) {
	list, err := iso7816.ParseTLV(b)
	if err != nil || len(list) != 3 || list[0].Tag != tagCounter || list[1].Tag != tagCVM || list[2].Tag != tagSignature ||
		len(list[0].Value) != 4 || len(list[1].Value) != 1 || len(list[2].Value) == 0 {
		return Signature{}, fmt.Errorf("%w: signature % X", errMalformedReply, b)
	}
	return Signature{
		Counter: binary.BigEndian.Uint32(list[0].Value),
		CVM:     txn.CVM(list[1].Value[0]),
		Sig:     list[2].Value,
	}, nil
}

// AuthData encodes INTERNAL AUTHENTICATE's data: 80 challenge, and 81
// context when context is not empty. It is the payload the signature's
// envelope covers.
func AuthData(challenge, context []byte) ([]byte, error) {
	if len(challenge) != ChallengeLen {
		return nil, fmt.Errorf("challenge of %d bytes, want %d", len(challenge), ChallengeLen)
	}
	if len(context) > MaxContextLen {
		return nil, fmt.Errorf("context of %d bytes, want at most %d", len(context), MaxContextLen)
	}
	b := iso7816.AppendTLV(nil, tagChallenge, challenge)
	if len(context) > 0 {
		b = iso7816.AppendTLV(b, tagContext, context)
	}
	return b, nil
}

// Authenticate signs a server challenge (INTERNAL AUTHENTICATE 00 88 00 00)
// with optional context (the server's session binding). The signature
// covers Envelope{PurposeAuth, payload = AuthData(challenge, context)}; it
// consumes a pending holder verification, if any (CVM none otherwise).
func (c *Client) Authenticate(ctx context.Context, challenge, context []byte) (Signature, error) {
	return c.authenticate(ctx, p1OnCard, challenge, context)
}

// AuthenticateOnlinePIN signs a server challenge like Authenticate, but
// declares that the holder keyed an online PIN, which the server checks
// from its encrypted PIN block (INTERNAL AUTHENTICATE 00 88 02 00): the
// signature's CVM is online PIN. While a verification on the card (PIN or
// biometric) is pending the card refuses, with iso7816.ErrConditions
// (6985), and the verification stays pending: use Authenticate, or forget
// it with ResetVerification.
func (c *Client) AuthenticateOnlinePIN(ctx context.Context, challenge, context []byte) (Signature, error) {
	return c.authenticate(ctx, p1OnlinePIN, challenge, context)
}

func (c *Client) authenticate(ctx context.Context, p1 byte, challenge, context []byte) (Signature, error) {
	data, err := AuthData(challenge, context)
	if err != nil {
		return Signature{}, fmt.Errorf("authenticating card: %w", err)
	}
	resp, err := c.exchange(ctx, claISO, insInternalAuth, p1, 0, data, 256)
	if err != nil {
		return Signature{}, fmt.Errorf("authenticating card: %w", err)
	}
	s, err := parseSignature(resp)
	if err != nil {
		return Signature{}, fmt.Errorf("authenticating card: %w", err)
	}
	return s, nil
}

// SignTransaction asks the card to sign a canonical transaction (SIGN
// TRANSACTION 80 A0). With onlinePIN false the holder must have been
// verified on the card (PIN or biometric) since the last signature, else
// iso7816.ErrSecurityStatus; with onlinePIN true the device declares that
// the server checks an encrypted PIN block. The signature covers
// Envelope{PurposeTransaction, payload = canonical}.
func (c *Client) SignTransaction(ctx context.Context, canonical []byte, onlinePIN bool) (Signature, error) {
	p1 := byte(p1OnCard)
	if onlinePIN {
		p1 = p1OnlinePIN
	}
	resp, err := c.exchange(ctx, claProprietary, insSignTransaction, p1, 0, canonical, 256)
	if err != nil {
		return Signature{}, fmt.Errorf("signing transaction: %w", err)
	}
	s, err := parseSignature(resp)
	if err != nil {
		return Signature{}, fmt.Errorf("signing transaction: %w", err)
	}
	return s, nil
}

// LogRecord is one record of the card's transaction log.
type LogRecord struct {
	Number  int // 1 is the most recent
	Purpose txn.Purpose
	Counter uint32
	CVM     txn.CVM
	Payload []byte
	// Transaction is the decoded payload when it is a canonical
	// transaction (purposes Transaction and PurseDebit), else nil.
	Transaction *txn.Transaction
}

// ReadRecord reads log record n (READ RECORD 00 B2 n 0C; 1 is the most
// recent). A record past the last is iso7816.ErrNotFound.
func (c *Client) ReadRecord(ctx context.Context, n int) (LogRecord, error) {
	if n < 1 || n > 255 {
		return LogRecord{}, fmt.Errorf("reading log record %d: out of range 1..255", n)
	}
	b, err := c.exchange(ctx, claISO, insReadRecord, byte(n), p2ReadLog, nil, 256)
	if err != nil {
		return LogRecord{}, fmt.Errorf("reading log record %d: %w", n, err)
	}
	r, err := ParseLogRecord(b)
	if err != nil {
		return LogRecord{}, fmt.Errorf("reading log record %d: %w", n, err)
	}
	r.Number = n
	return r, nil
}

// ParseLogRecord decodes a log record:
// 70 { 80 purpose, 82 counter, 83 CVM, 84 payload }.
func ParseLogRecord(b []byte) (LogRecord, error) {
	list, err := iso7816.ParseTLV(b)
	if err != nil || len(list) != 1 || list[0].Tag != tagLogRecord {
		return LogRecord{}, fmt.Errorf("%w: log record % X", errMalformedReply, b)
	}
	f := list[0].Children
	if len(f) != 4 || f[0].Tag != tagLogPurpose || f[1].Tag != tagLogCounter || f[2].Tag != tagLogCVM || f[3].Tag != tagLogPayload ||
		len(f[0].Value) != 1 || len(f[1].Value) != 4 || len(f[2].Value) != 1 {
		return LogRecord{}, fmt.Errorf("%w: log record fields", errMalformedReply)
	}
	r := LogRecord{
		Purpose: txn.Purpose(f[0].Value[0]),
		Counter: binary.BigEndian.Uint32(f[1].Value),
		CVM:     txn.CVM(f[2].Value[0]),
		Payload: f[3].Value,
	}
	if r.Purpose == txn.PurposeTransaction || r.Purpose == txn.PurposePurseDebit {
		if t, err := txn.Parse(r.Payload); err == nil {
			r.Transaction = &t
		}
	}
	return r, nil
}

// Log reads the whole transaction log, most recent first.
func (c *Client) Log(ctx context.Context) ([]LogRecord, error) {
	v, err := c.GetData(ctx, tagLogUsed)
	if err != nil {
		return nil, fmt.Errorf("reading log: %w", err)
	}
	if len(v) != 1 {
		return nil, fmt.Errorf("reading log: %w: records used", errMalformedReply)
	}
	recs := make([]LogRecord, 0, v[0])
	for n := 1; n <= int(v[0]); n++ {
		r, err := c.ReadRecord(ctx, n)
		if err != nil {
			return nil, fmt.Errorf("reading log: %w", err)
		}
		recs = append(recs, r)
	}
	return recs, nil
}
