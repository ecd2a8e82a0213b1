// Package piv is the PIV applet: the subset of NIST SP 800-73-4 (parts 1
// and 2) that OpenSC, yubico-piv-tool and piv-go need, with the YubiKey
// extensions those tools send (GET VERSION, GET SERIAL, GET METADATA, SET
// MANAGEMENT KEY, SET PIN RETRIES, RESET, IMPORT KEY). Every command is
// specified in docs/piv-applet.md.
//
// Keys are ECDSA P-256 (algorithm 11). The card management key (9B) is
// 3DES (algorithm 03, the default) or AES-128/192/256 (08, 0A, 0C).
//
// It runs on the card: it imports only card, nvm, iso7816 and the standard
// library (no os, net, logs), and answers with status words only. Its
// persistent state lives in NVM under "piv/"; a key that was never written
// reads as its factory default (ROM), so a blank card is a PIV card with
// the default PIN, PUK and management key.
package piv

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"

	"cardlink/internal/card"
	"cardlink/internal/card/nvm"
	"cardlink/internal/iso7816"
)

// AID is the PIV Card Application's AID (SP 800-73-4 Part 1 §2.2): NIST
// RID A0 00 00 03 08, PIX 00 00 10 00 01 00. SELECT with the RID alone (as
// piv-go and yubico-piv-tool send it) reaches it by partial name.
var AID = []byte{0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00}

// Instruction bytes: SP 800-73-4 Part 2 §3, then the YubiKey extensions.
const (
	insVerify          = 0x20
	insChangeReference = 0x24
	insResetRetry      = 0x2C
	insGenerate        = 0x47
	insAuthenticate    = 0x87
	insGetData         = 0xCB
	insPutData         = 0xDB

	insGetMetadata   = 0xF7
	insGetSerial     = 0xF8
	insSetPINRetries = 0xFA
	insReset         = 0xFB
	insGetVersion    = 0xFD
	insImportKey     = 0xFE
	insSetMgmtKey    = 0xFF
)

// Algorithm identifiers (SP 800-78-4 Table 6-2).
const (
	alg3DES   = 0x03
	algAES128 = 0x08
	algAES192 = 0x0A
	algAES256 = 0x0C
	algP256   = 0x11
	algPIN    = 0xFF // GET METADATA's "algorithm" of the PIN and PUK
)

// Key references (SP 800-78-4 Table 6-1).
const (
	refPIN         = 0x80
	refPUK         = 0x81
	refMgmt        = 0x9B
	refAuth        = 0x9A
	refSign        = 0x9C
	refKeyMgmt     = 0x9D
	refCardAuth    = 0x9E
	refRetiredLow  = 0x82
	refRetiredHigh = 0x95
)

// Tags of the Application Property Template (SP 800-73-4 Part 2 §3.1.1,
// Table 3) and of the templates GENERATE and GENERAL AUTHENTICATE use.
const (
	tagAPT        iso7816.Tag = 0x61
	tagAID        iso7816.Tag = 0x4F
	tagAuthority  iso7816.Tag = 0x79
	tagLabel      iso7816.Tag = 0x50
	tagAlgorithms iso7816.Tag = 0xAC
	tagAlgID      iso7816.Tag = 0x80
	tagObjectID   iso7816.Tag = 0x06

	tagPINPolicy   iso7816.Tag = 0xAA // YubiKey extension inside AC
	tagTouchPolicy iso7816.Tag = 0xAB // YubiKey extension inside AC

	tagPublicKey iso7816.Tag = 0x7F49
	tagPoint     iso7816.Tag = 0x86

	tagDynAuth   iso7816.Tag = 0x7C
	tagWitness   iso7816.Tag = 0x80
	tagChallenge iso7816.Tag = 0x81
	tagResponse  iso7816.Tag = 0x82
	tagExponent  iso7816.Tag = 0x85

	tagTagList iso7816.Tag = 0x5C
	tagData    iso7816.Tag = 0x53
)

// pix is the PIX the APT names (tag 4F), and rid the NIST RID (tag 79/4F).
var (
	pix = AID[5:]
	rid = AID[:5]
)

// label is the application label in the APT (tag 50).
const label = "cardlink PIV"

// version is what GET VERSION answers: the YubiKey firmware whose
// extensions this applet follows (5.4.3 has GET METADATA and AES
// management keys, but a 3DES default key).
var version = []byte{5, 4, 3}

// NVM keys. Every key starts with "piv/". An absent key is the factory
// default.
const (
	keySalt     = "piv/salt"      // 16 random bytes, written with the first PIN or PUK change
	keyPINHash  = "piv/pin/hash"  // SHA-256(salt || 80 || padded PIN); absent: defaultPIN
	keyPINTries = "piv/pin/tries" // 1 byte tries left; absent: the limit
	keyPINMax   = "piv/pin/max"   // 1 byte try limit; absent: defaultPINTries
	keyPUKHash  = "piv/puk/hash"  // SHA-256(salt || 81 || padded PUK); absent: defaultPUK
	keyPUKTries = "piv/puk/tries"
	keyPUKMax   = "piv/puk/max"
	keyMgmt     = "piv/mgmt"   // algorithm byte || key; absent: 3DES defaultMgmtKey
	keySerial   = "piv/serial" // 4 bytes, chosen at the first GET SERIAL
	keySlot     = "piv/key/"   // + 2 hex digits of the key reference: slot record
	keyObject   = "piv/obj/"   // + hex tag: the object's 53 TLV as GET DATA returns it
	keyPrefix   = "piv/"       // everything RESET erases
)

// RAM keys (cleared on reset, power off and SELECT).
const (
	ramPINOK     = "pin"     // PIN verified in this session
	ramPINFresh  = "pinnew"  // PIN verified since the last PIN-always operation
	ramMgmtOK    = "mgmt"    // management key authenticated in this session
	ramWitness   = "witness" // plaintext witness of a pending mutual authentication
	ramChallenge = "chal"    // challenge of a pending external authentication
)

// Factory defaults (docs/piv-applet.md, "Defaults"). They are public and
// the same on every card; an issuer must change them.
var (
	// defaultPIN is the PIN of a new card.
	defaultPIN = []byte("123456")
	// defaultPUK is the PUK of a new card.
	defaultPUK = []byte("12345678")
	// defaultMgmtKey is the 3DES card management key of a new card.
	defaultMgmtKey = []byte{
		1, 2, 3, 4, 5, 6, 7, 8,
		1, 2, 3, 4, 5, 6, 7, 8,
		1, 2, 3, 4, 5, 6, 7, 8,
	}
)

// Try limits of a new card; SET PIN RETRIES changes them.
const (
	defaultPINTries = 3
	defaultPUKTries = 3
)

// Applet is the PIV applet. Its state lives in NVM under "piv/" and in its
// RAM; the value holds nothing.
type Applet struct{}

var _ card.Applet = (*Applet)(nil)

// New returns the PIV applet.
func New() *Applet { return &Applet{} }

// AID implements card.Applet.
func (a *Applet) AID() []byte { return AID }

// Select implements card.Applet. It answers with the Application Property
// Template (SP 800-73-4 Part 2 §3.1.1):
// 61 { 4F PIX, 79 { 4F RID }, 50 label, AC { 80 03, 80 08, 80 0A, 80 0C, 80 11, 06 00 } }.
// Selection resets the security status (PIN, management key, pending
// challenges), as a YubiKey does: yubico-piv-tool reselects the applet to
// read the PIN tries without a "verified" answer.
func (a *Applet) Select(ctx *card.Context) ([]byte, iso7816.SW) {
	ctx.RAM.Clear()
	var algs []byte
	for _, alg := range []byte{alg3DES, algAES128, algAES192, algAES256, algP256} {
		algs = iso7816.AppendTLV(algs, tagAlgID, []byte{alg})
	}
	algs = iso7816.AppendTLV(algs, tagObjectID, nil)
	body := iso7816.AppendTLV(nil, tagAID, pix)
	body = iso7816.AppendTLV(body, tagAuthority, iso7816.AppendTLV(nil, tagAID, rid))
	body = iso7816.AppendTLV(body, tagLabel, []byte(label))
	body = iso7816.AppendTLV(body, tagAlgorithms, algs)
	return iso7816.AppendTLV(nil, tagAPT, body), iso7816.SWOK
}

// handler is one command's implementation.
type handler func(*card.Context, iso7816.Command) ([]byte, iso7816.SW)

// commands maps INS to its handler; filled in init to break the
// initialization cycle through the handlers.
var commands map[byte]handler

func init() {
	commands = map[byte]handler{
		insVerify:          verify,
		insChangeReference: changeReference,
		insResetRetry:      resetRetry,
		insGenerate:        generate,
		insAuthenticate:    authenticate,
		insGetData:         getData,
		insPutData:         putData,
		insGetMetadata:     getMetadata,
		insGetSerial:       getSerial,
		insSetPINRetries:   setPINRetries,
		insReset:           reset,
		insGetVersion:      getVersion,
		insImportKey:       importKey,
		insSetMgmtKey:      setMgmtKey,
	}
}

// Process implements card.Applet: class 00 only (6E00), instruction lookup
// (6D00), then the command's handler.
func (a *Applet) Process(ctx *card.Context, cmd iso7816.Command) ([]byte, iso7816.SW) {
	if cmd.CLA != 0 {
		return nil, iso7816.SWCLANotSupported
	}
	h, ok := commands[cmd.INS]
	if !ok {
		return nil, iso7816.SWINSNotSupported
	}
	return h(ctx, cmd)
}

// getVersion handles GET VERSION (00 FD 00 00): three bytes.
func getVersion(ctx *card.Context, cmd iso7816.Command) ([]byte, iso7816.SW) {
	if cmd.P1 != 0 || cmd.P2 != 0 {
		return nil, iso7816.SWIncorrectP1P2
	}
	return version, iso7816.SWOK
}

// getSerial handles GET SERIAL (00 F8 00 00): four bytes, big-endian. The
// serial is drawn at random (1 to 2^31-1) and persisted on first use.
func getSerial(ctx *card.Context, cmd iso7816.Command) ([]byte, iso7816.SW) {
	if cmd.P1 != 0 || cmd.P2 != 0 {
		return nil, iso7816.SWIncorrectP1P2
	}
	if s := ctx.NVM.Get(keySerial); len(s) == 4 {
		return s, iso7816.SWOK
	}
	var b [4]byte
	for binary.BigEndian.Uint32(b[:])&0x7FFFFFFF == 0 {
		if _, err := io.ReadFull(random(ctx), b[:]); err != nil {
			return nil, iso7816.SWUnknown
		}
	}
	b[0] &= 0x7F
	if err := ctx.NVM.Update(func(tx *nvm.Tx) error {
		tx.Put(keySerial, b[:])
		return nil
	}); err != nil {
		return nil, commitSW(err)
	}
	return b[:], iso7816.SWOK
}

// random returns the card's random source.
func random(ctx *card.Context) io.Reader {
	if ctx.Rand == nil {
		return rand.Reader
	}
	return ctx.Rand
}

// commitSW maps an error from nvm.Memory.Update to a status word: 6A84
// when the memory is full, 6581 otherwise.
func commitSW(err error) iso7816.SW {
	if errors.Is(err, nvm.ErrFull) {
		return iso7816.SWNoSpace
	}
	return iso7816.SWMemoryFailure
}

// mgmtAuthenticated reports whether the management key was authenticated
// in this session.
func mgmtAuthenticated(ctx *card.Context) bool { return ctx.RAM.Get(ramMgmtOK) != nil }

// pinVerified reports whether the PIN was verified in this session.
func pinVerified(ctx *card.Context) bool { return ctx.RAM.Get(ramPINOK) != nil }

// parseFlat splits b into BER-TLV objects without looking inside them.
// PIV templates use context-specific tags with the "constructed" bit set
// for plain values (AA and AB in GENERATE, 70 and 71 in certificate
// objects), so the contents of such objects must not be parsed as TLVs.
// Tags are 1 to 3 bytes; lengths are definite, up to 82 xx xx.
func parseFlat(b []byte) ([]iso7816.TLV, bool) {
	var out []iso7816.TLV
	for len(b) > 0 {
		if b[0] == 0x00 || b[0] == 0xFF {
			return nil, false
		}
		n := 1
		if b[0]&0x1F == 0x1F {
			for n < len(b) && n < 3 && b[n]&0x80 != 0 {
				n++
			}
			n++
		}
		if n > len(b) || n > 3 || n > 1 && b[n-1]&0x80 != 0 {
			return nil, false
		}
		var tag iso7816.Tag
		for _, c := range b[:n] {
			tag = tag<<8 | iso7816.Tag(c)
		}
		b = b[n:]
		if len(b) == 0 {
			return nil, false
		}
		l, m := int(b[0]), 1
		switch b[0] {
		case 0x81:
			if len(b) < 2 {
				return nil, false
			}
			l, m = int(b[1]), 2
		case 0x82:
			if len(b) < 3 {
				return nil, false
			}
			l, m = int(b[1])<<8|int(b[2]), 3
		default:
			if b[0] > 0x7F {
				return nil, false
			}
		}
		if len(b)-m < l {
			return nil, false
		}
		out = append(out, iso7816.TLV{Tag: tag, Value: b[m : m+l]})
		b = b[m+l:]
	}
	return out, true
}

// parseFlatOne parses b as exactly one object with the given tag and
// returns the objects inside it, without recursing further.
func parseFlatOne(b []byte, tag iso7816.Tag) ([]iso7816.TLV, bool) {
	list, ok := parseFlat(b)
	if !ok || len(list) != 1 || list[0].Tag != tag {
		return nil, false
	}
	return parseFlat(list[0].Value)
}
