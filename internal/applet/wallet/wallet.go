// Package wallet is the cardlink wallet applet: card identity, PIN and
// biometric holder verification, INTERNAL AUTHENTICATE, SIGN TRANSACTION,
// the cyclic transaction log, the e-money purse and the e-goods store.
// Every command is specified in docs/wallet-applet.md.
//
// It runs on the card: it imports only card, nvm, iso7816, txn, money and the
// standard library, and answers with status words only.
package wallet

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"math"

	"cardlink/internal/card"
	"cardlink/internal/card/nvm"
	"cardlink/internal/iso7816"
	"cardlink/internal/txn"
)

// AID is the wallet applet's application identifier (a proprietary RID
// F0 'cardlink' style, see docs/wallet-applet.md).
var AID = []byte{0xF0, 0x63, 0x61, 0x72, 0x64, 0x6C, 0x6E, 0x6B, 0x01}

// Instruction bytes (docs/wallet-applet.md).
const (
	// Interindustry class (CLA 00).
	insVerify          = 0x20
	insChangeReference = 0x24
	insResetRetry      = 0x2C
	insGenerateKey     = 0x47 // personalization only
	insInternalAuth    = 0x88
	insReadRecord      = 0xB2
	insGetData         = 0xCA
	insPutData         = 0xDA // personalization only

	// Proprietary class (CLA 80).
	insSignTransaction = 0xA0
	insPurseLoad       = 0xA2
	insPurseDebit      = 0xA6
	insStoreItem       = 0xE2
	insListItems       = 0xE4
	insReadItem        = 0xE6
	insDeleteItem      = 0xE8
	insEndPerso        = 0xF0
)

// Class bytes (ISO/IEC 7816-4 §5.4.1), after the card OS has cleared the
// chaining and channel bits.
const (
	claISO         = 0x00
	claProprietary = 0x80
)

// Data object tags (docs/wallet-applet.md, "Tags").
const (
	tagCardNumber    iso7816.Tag = 0x5A
	tagCounter       iso7816.Tag = 0x9F36
	tagPINTries      iso7816.Tag = 0x9F17
	tagBioTries      iso7816.Tag = 0xDF21
	tagPUKTries      iso7816.Tag = 0xDF22
	tagCertificate   iso7816.Tag = 0xDF20
	tagCAKeyID       iso7816.Tag = 0xDF23
	tagOpsKeyID      iso7816.Tag = 0xDF24
	tagLifecycle     iso7816.Tag = 0xDF25
	tagOpsKey        iso7816.Tag = 0xDF26
	tagPIN           iso7816.Tag = 0xDF27
	tagPUK           iso7816.Tag = 0xDF28
	tagBioTemplate   iso7816.Tag = 0xDF29
	tagBioThreshold  iso7816.Tag = 0xDF2A
	tagCVM           iso7816.Tag = 0x9F34
	tagSignature     iso7816.Tag = 0x9F4B
	tagPersoCurrency iso7816.Tag = 0xDF31
	tagPersoMax      iso7816.Tag = 0xDF33
	tagLogCapacity   iso7816.Tag = 0xDF50
	tagLogUsed       iso7816.Tag = 0xDF51

	tagFCI         iso7816.Tag = 0x6F
	tagDFName      iso7816.Tag = 0x84
	tagFCIProp     iso7816.Tag = 0xA5
	tagAppLabel    iso7816.Tag = 0x50
	tagPublicKey   iso7816.Tag = 0x7F49
	tagPublicPoint iso7816.Tag = 0x86
)

// Lifecycle states (tag DF25).
const (
	statePersonalizing = 0
	stateOperational   = 1
)

// appLabel is the application label in the FCI (tag 50).
const appLabel = "cardlink wallet"

// NVM keys of the core applet. Every key starts with "wallet/".
const (
	keyState     = "wallet/state"      // 1 byte lifecycle; absent means personalizing
	keyPrivate   = "wallet/key"        // 32-byte P-256 scalar
	keyCardNum   = "wallet/pan"        // 8-byte BCD card number
	keyCert      = "wallet/cert"       // card certificate, DER
	keyCAKeyID   = "wallet/cakid"      // issuer CA key id
	keyOpsKeyID  = "wallet/opskid"     // issuer operations key id
	keyOpsPub    = "wallet/opspub"     // 65-byte uncompressed P-256 point
	keySalt      = "wallet/salt"       // 16 random bytes, card-unique
	keyPINHash   = "wallet/pin/hash"   // SHA-256(salt || 81 || PIN block)
	keyPINTries  = "wallet/pin/tries"  // 1 byte
	keyPUKHash   = "wallet/puk/hash"   // SHA-256(salt || 82 || PUK block)
	keyPUKTries  = "wallet/puk/tries"  // 1 byte
	keyBioTmpl   = "wallet/bio/tmpl"   // enrolled template
	keyBioThresh = "wallet/bio/thresh" // 1 byte, Hamming distance accepted
	keyBioTries  = "wallet/bio/tries"  // 1 byte
	keyCounter   = "wallet/atc"        // 4-byte transaction counter
	keyLogHead   = "wallet/log/head"   // 2 bytes: next slot, records used
	keyLogPrefix = "wallet/log/"       // + two decimal digits: slot
)

// RAM keys (cleared on reset, power off and SELECT).
const (
	ramPINOK = "pinok" // non-nil: the PIN was verified in this session
	ramBioOK = "biook" // non-nil: the biometric was verified in this session
	ramCVM   = "cvm"   // 1 byte txn.CVM pending for the next signature
)

// Applet is the wallet applet. Its state lives in the card's NVM under the
// "wallet/" prefix and in its RAM.
type Applet struct{}

var _ card.Applet = (*Applet)(nil)

// New returns the wallet applet.
func New() *Applet { return &Applet{} }

// AID implements card.Applet.
func (a *Applet) AID() []byte { return AID }

// Select implements card.Applet. Selection ends the holder verification of
// the session (RAM is cleared) and returns the FCI:
// 6F { 84 AID, A5 { 50 "cardlink wallet", DF25 lifecycle } }.
func (a *Applet) Select(ctx *card.Context) ([]byte, iso7816.SW) {
	ctx.RAM.Clear()
	state := byte(statePersonalizing)
	if operational(ctx) {
		state = stateOperational
	}
	prop := iso7816.AppendTLV(nil, tagAppLabel, []byte(appLabel))
	prop = iso7816.AppendTLV(prop, tagLifecycle, []byte{state})
	body := iso7816.AppendTLV(nil, tagDFName, AID)
	body = iso7816.AppendTLV(body, tagFCIProp, prop)
	return iso7816.AppendTLV(nil, tagFCI, body), iso7816.SWOK
}

// command describes how Process dispatches one instruction.
type command struct {
	cla   byte
	perso bool // allowed while personalizing
	oper  bool // allowed once operational
	fn    func(*card.Context, iso7816.Command) ([]byte, iso7816.SW)
}

// commands maps INS to its handler. It is filled in init to break the
// initialization cycle through the handlers.
var commands map[byte]command

func init() {
	commands = map[byte]command{
		insVerify:          {claISO, false, true, verify},
		insChangeReference: {claISO, false, true, changeReference},
		insResetRetry:      {claISO, false, true, resetRetry},
		insGenerateKey:     {claISO, true, false, generateKey},
		insInternalAuth:    {claISO, false, true, internalAuthenticate},
		insReadRecord:      {claISO, false, true, readRecord},
		insGetData:         {claISO, true, true, getData},
		insPutData:         {claISO, true, false, putData},
		insSignTransaction: {claProprietary, false, true, signTransaction},
		insPurseLoad:       {claProprietary, false, true, purseLoad},
		insPurseDebit:      {claProprietary, false, true, purseDebit},
		insStoreItem:       {claProprietary, false, true, storeItem},
		insListItems:       {claProprietary, false, true, listItems},
		insReadItem:        {claProprietary, false, true, readItem},
		insDeleteItem:      {claProprietary, false, true, deleteItem},
		insEndPerso:        {claProprietary, true, false, endPersonalization},
	}
}

// Process implements card.Applet: class check (6E00), instruction lookup
// (6D00), lifecycle check (6985), then the command's handler.
func (a *Applet) Process(ctx *card.Context, cmd iso7816.Command) ([]byte, iso7816.SW) {
	if cmd.CLA != claISO && cmd.CLA != claProprietary {
		return nil, iso7816.SWCLANotSupported
	}
	c, ok := commands[cmd.INS]
	if !ok {
		return nil, iso7816.SWINSNotSupported
	}
	if cmd.CLA != c.cla {
		return nil, iso7816.SWCLANotSupported
	}
	if op := operational(ctx); op && !c.oper || !op && !c.perso {
		return nil, iso7816.SWConditionsNotSatisfied
	}
	return c.fn(ctx, cmd)
}

// Helpers shared by the command files (identity, PIN, signing: wallet.go and
// its siblings; purse.go and goods.go use them).

// cardNumber returns the personalized 16-digit card number, or "" before
// it is written.
func cardNumber(ctx *card.Context) string {
	s, err := txn.ParseCardNumberBCD(ctx.NVM.Get(keyCardNum))
	if err != nil {
		return ""
	}
	return s
}

// operational reports whether personalization has ended.
func operational(ctx *card.Context) bool {
	v := ctx.NVM.Get(keyState)
	return len(v) == 1 && v[0] == stateOperational
}

// consumeCVM returns how the holder was verified since the last signature
// (offline PIN or biometric, from RAM) and forgets it: one verification
// covers one signature. CVMNone if none.
func consumeCVM(ctx *card.Context) txn.CVM {
	v := ctx.RAM.Get(ramCVM)
	ctx.RAM.Delete(ramCVM)
	if len(v) != 1 {
		return txn.CVMNone
	}
	return txn.CVM(v[0])
}

// pendingCVM is consumeCVM without forgetting.
func pendingCVM(ctx *card.Context) txn.CVM {
	v := ctx.RAM.Get(ramCVM)
	if len(v) != 1 {
		return txn.CVMNone
	}
	return txn.CVM(v[0])
}

// errCounterExhausted is returned by bumpCounter at the counter's maximum.
var errCounterExhausted = errors.New("transaction counter exhausted")

// bumpCounter increments the transaction counter inside tx and returns the
// new value; it fails with errCounterExhausted (and the command must answer
// 6985, as commitSW does) if the counter would wrap.
func bumpCounter(tx *nvm.Tx) (uint32, error) {
	n := getUint32(tx.Get(keyCounter))
	if n == math.MaxUint32 {
		return 0, errCounterExhausted
	}
	n++
	tx.Put(keyCounter, binary.BigEndian.AppendUint32(nil, n))
	return n, nil
}

// commitSW maps an error from nvm.Memory.Update to a status word: 6A84 when
// the memory is full, 6985 when the counter is exhausted, 6581 otherwise.
func commitSW(err error) iso7816.SW {
	switch {
	case errors.Is(err, nvm.ErrFull):
		return iso7816.SWNoSpace
	case errors.Is(err, errCounterExhausted):
		return iso7816.SWConditionsNotSatisfied
	}
	return iso7816.SWMemoryFailure
}

// privateKeyMemo caches the card's parsed private key (parsing computes
// the public key, a scalar multiplication) until the key bytes change.
var privateKeyMemo = nvm.NewMemo(keyPrivate, func(b []byte) (*ecdsa.PrivateKey, error) {
	return ecdsa.ParseRawPrivateKey(elliptic.P256(), b)
})

// privateKey returns the card's private key, or nil before GENERATE KEY.
// The key is cached in the card's NVM (nvm.Memo) and shared by its
// commands until the key bytes change: callers must not modify it.
func privateKey(ctx *card.Context) *ecdsa.PrivateKey {
	k, err := privateKeyMemo.Get(ctx.NVM)
	if err != nil {
		return nil
	}
	return k
}

// sign signs env with the card's private key (ECDSA P-256, SHA-256, DER).
// It answers 6985 when the card has no key, 6A80 when env cannot be
// encoded (an empty or oversized payload) and 6F00 when signing fails.
func sign(ctx *card.Context, env *txn.Envelope) ([]byte, iso7816.SW) {
	k := privateKey(ctx)
	if k == nil {
		return nil, iso7816.SWConditionsNotSatisfied
	}
	if env.Validate() != nil {
		return nil, iso7816.SWWrongData
	}
	h := sha256.Sum256(env.Bytes())
	sig, err := ecdsa.SignASN1(ctx.Rand, k, h[:])
	if err != nil {
		return nil, iso7816.SWUnknown
	}
	return sig, iso7816.SWOK
}

// signatureResponse encodes the answer of every signing command:
// 9F36 counter, 9F34 CVM, 9F4B signature.
func signatureResponse(counter uint32, cvm txn.CVM, sig []byte) []byte {
	b := make([]byte, 0, 16+len(sig))
	b = iso7816.AppendTLV(b, tagCounter, binary.BigEndian.AppendUint32(nil, counter))
	b = iso7816.AppendTLV(b, tagCVM, []byte{byte(cvm)})
	return iso7816.AppendTLV(b, tagSignature, sig)
}

// holderVerified reports whether the PIN (or biometric) was verified in
// this card session, whether or not a signature has consumed it since.
func holderVerified(ctx *card.Context) bool {
	return ctx.RAM.Get(ramPINOK) != nil || ctx.RAM.Get(ramBioOK) != nil
}

// opsKey returns the issuer operations public key written at
// personalization; purse loads and e-goods must carry its signature. It is
// nil before personalization wrote it. The key is shared: callers must not
// modify it.
func opsKey(ctx *card.Context) *ecdsa.PublicKey {
	k, err := opsKeyMemo.Get(ctx.NVM)
	if err != nil {
		return nil
	}
	return k
}

// opsKeyMemo caches the parsed operations key until its bytes change.
var opsKeyMemo = nvm.NewMemo(keyOpsPub, func(b []byte) (*ecdsa.PublicKey, error) {
	return ecdsa.ParseUncompressedPublicKey(elliptic.P256(), b)
})

// NVM keys shared between the command files. Every key starts with "wallet/".
const (
	keyPurseCurrency = "wallet/purse/currency" // ISO 4217 letters, written at personalization
	keyPurseMax      = "wallet/purse/max"      // 8-byte max balance, written at personalization (default 2^63-1)
)

// getUint32 decodes a 4-byte big-endian value; anything else reads as 0.
func getUint32(b []byte) uint32 {
	if len(b) != 4 {
		return 0
	}
	return binary.BigEndian.Uint32(b)
}
