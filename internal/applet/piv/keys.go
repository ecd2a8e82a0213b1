package piv

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/hex"
	"errors"

	"cardlink/internal/card"
	"cardlink/internal/card/nvm"
	"cardlink/internal/iso7816"
)

// PIN policies (YubiKey extension, tag AA in GENERATE and IMPORT KEY).
const (
	pinPolicyDefault = 0
	pinPolicyNever   = 1
	pinPolicyOnce    = 2
	pinPolicyAlways  = 3
)

// Touch policies (tag AB). Only "default" and "never" are accepted: a
// virtual card has no touch sensor.
const (
	touchPolicyDefault = 0
	touchPolicyNever   = 1
)

// Key origins reported by GET METADATA (tag 03).
const (
	originGenerated = 1
	originImported  = 2
)

// Sizes of P-256 values.
const (
	scalarLen = 32
	pointLen  = 65 // uncompressed: 04 || X || Y
	digestMax = 32
)

// Tags of IMPORT KEY (YubiKey) and GET METADATA (YubiKey).
const (
	tagECPrivate iso7816.Tag = 0x06

	tagMetaAlgorithm iso7816.Tag = 0x01
	tagMetaPolicy    iso7816.Tag = 0x02
	tagMetaOrigin    iso7816.Tag = 0x03
	tagMetaPublic    iso7816.Tag = 0x04
	tagMetaDefault   iso7816.Tag = 0x05
	tagMetaRetries   iso7816.Tag = 0x06
)

// slotHeaderLen is the header of a key slot's NVM record: algorithm, PIN policy,
// touch policy, origin, then the 32-byte private scalar.
const slotHeaderLen = 4

// isKeySlot reports whether ref names an asymmetric key slot: 9A, 9C, 9D,
// 9E or a retired key management slot 82..95.
func isKeySlot(ref byte) bool {
	switch ref {
	case refAuth, refSign, refKeyMgmt, refCardAuth:
		return true
	}
	return ref >= refRetiredLow && ref <= refRetiredHigh
}

// defaultPINPolicy is the policy of a slot generated with policy 0
// (SP 800-73-4 Part 1 §3.2 access rules, as YubiKeys apply them):
// 9C PIN always, 9E never, the others once per session.
func defaultPINPolicy(ref byte) byte {
	switch ref {
	case refSign:
		return pinPolicyAlways
	case refCardAuth:
		return pinPolicyNever
	}
	return pinPolicyOnce
}

// slotKey is a key slot's content.
type slotKey struct {
	alg, pinPolicy, touchPolicy, origin byte
	priv                                *ecdsa.PrivateKey
}

// slotNVMKey returns the NVM key of slot ref.
func slotNVMKey(ref byte) string { return keySlot + hex.EncodeToString([]byte{ref}) }

// loadSlot reads slot ref; ok is false when it holds no key. The private
// key is shared by every caller that reads the same slot bytes (see
// slotMemos): callers must not modify it.
func loadSlot(ctx *card.Context, ref byte) (slotKey, bool) {
	m := slotMemos[ref]
	if m == nil {
		return slotKey{}, false // not a key slot: nothing is ever stored there
	}
	k, err := m.Get(ctx.NVM)
	return k, err == nil
}

// slotMemos caches the decoded content of each key slot (parsing a
// private key computes its public key, a scalar multiplication) until the
// slot's bytes change. It is filled in init, for the refs isKeySlot
// accepts.
var slotMemos [256]*nvm.Memo[slotKey]

func init() {
	for ref := range slotMemos {
		if isKeySlot(byte(ref)) {
			slotMemos[ref] = nvm.NewMemo(slotNVMKey(byte(ref)), decodeSlot)
		}
	}
}

// errNoKey marks a slot record that holds no usable key.
var errNoKey = errors.New("piv: no key in slot")

// decodeSlot decodes a slot record: header, then the P-256 scalar.
func decodeSlot(v []byte) (slotKey, error) {
	if len(v) != slotHeaderLen+scalarLen || v[0] != algP256 {
		return slotKey{}, errNoKey
	}
	priv, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), v[slotHeaderLen:])
	if err != nil {
		return slotKey{}, err
	}
	return slotKey{alg: v[0], pinPolicy: v[1], touchPolicy: v[2], origin: v[3], priv: priv}, nil
}

// storeSlot writes k to slot ref.
func storeSlot(ctx *card.Context, ref byte, k slotKey) iso7816.SW {
	d, err := k.priv.Bytes()
	if err != nil {
		return iso7816.SWUnknown
	}
	rec := append([]byte{k.alg, k.pinPolicy, k.touchPolicy, k.origin}, d...)
	if err := ctx.NVM.Update(func(tx *nvm.Tx) error {
		tx.Put(slotNVMKey(ref), rec)
		return nil
	}); err != nil {
		return commitSW(err)
	}
	return iso7816.SWOK
}

// parsePolicies reads the optional AA (PIN policy) and AB (touch policy)
// objects of GENERATE and IMPORT KEY, replacing policy 0 by the slot's
// default.
func parsePolicies(ref byte, list []iso7816.TLV) (pin, touch byte, ok bool) {
	pin, touch = pinPolicyDefault, touchPolicyDefault
	if t, found := iso7816.FindTLV(list, tagPINPolicy); found {
		if len(t.Value) != 1 || t.Value[0] > pinPolicyAlways {
			return 0, 0, false
		}
		pin = t.Value[0]
	}
	if t, found := iso7816.FindTLV(list, tagTouchPolicy); found {
		if len(t.Value) != 1 || t.Value[0] > touchPolicyNever {
			return 0, 0, false
		}
	}
	if pin == pinPolicyDefault {
		pin = defaultPINPolicy(ref)
	}
	return pin, touchPolicyNever, true
}

// pointObject encodes 86 point, the uncompressed public point.
func pointObject(pub *ecdsa.PublicKey) ([]byte, bool) {
	p, err := pub.Bytes()
	if err != nil {
		return nil, false
	}
	return iso7816.AppendTLV(nil, tagPoint, p), true
}

// publicKeyTemplate encodes 7F49 { 86 point } (SP 800-73-4 Part 2 §3.3.2,
// Table 11).
func publicKeyTemplate(pub *ecdsa.PublicKey) ([]byte, bool) {
	p, ok := pointObject(pub)
	if !ok {
		return nil, false
	}
	return iso7816.AppendTLV(nil, tagPublicKey, p), true
}

// generate handles GENERATE ASYMMETRIC KEY PAIR (00 47 00 ref, SP 800-73-4
// Part 2 §3.3.2): data AC { 80 11 [, AA pin policy] [, AB touch policy] }.
// It needs the management key; it replaces any key in the slot (the
// slot's certificate object stays) and answers 7F49 { 86 point }.
func generate(ctx *card.Context, cmd iso7816.Command) ([]byte, iso7816.SW) {
	if cmd.P1 != 0 || !isKeySlot(cmd.P2) {
		return nil, iso7816.SWIncorrectP1P2
	}
	if !mgmtAuthenticated(ctx) {
		return nil, iso7816.SWSecurityStatus
	}
	list, ok := parseFlatOne(cmd.Data, tagAlgorithms)
	if !ok {
		return nil, iso7816.SWWrongData
	}
	alg, found := iso7816.FindTLV(list, tagAlgID)
	if !found || len(alg.Value) != 1 || alg.Value[0] != algP256 {
		return nil, iso7816.SWWrongData
	}
	pin, touch, ok := parsePolicies(cmd.P2, list)
	if !ok {
		return nil, iso7816.SWWrongData
	}
	priv, err := ecdsa.GenerateKey(elliptic.P256(), random(ctx))
	if err != nil {
		return nil, iso7816.SWUnknown
	}
	resp, ok := publicKeyTemplate(&priv.PublicKey)
	if !ok {
		return nil, iso7816.SWUnknown
	}
	if sw := storeSlot(ctx, cmd.P2, slotKey{algP256, pin, touch, originGenerated, priv}); !sw.OK() {
		return nil, sw
	}
	return resp, iso7816.SWOK
}

// importKey handles IMPORT ASYMMETRIC KEY (00 FE 11 ref, YubiKey): data
// 06 <32-byte scalar> [, AA pin policy] [, AB touch policy]. It needs the
// management key.
func importKey(ctx *card.Context, cmd iso7816.Command) ([]byte, iso7816.SW) {
	if !isKeySlot(cmd.P2) {
		return nil, iso7816.SWIncorrectP1P2
	}
	if !mgmtAuthenticated(ctx) {
		return nil, iso7816.SWSecurityStatus
	}
	if cmd.P1 != algP256 {
		return nil, iso7816.SWWrongData
	}
	list, ok := parseFlat(cmd.Data)
	if !ok {
		return nil, iso7816.SWWrongData
	}
	for _, t := range list {
		if t.Tag != tagECPrivate && t.Tag != tagPINPolicy && t.Tag != tagTouchPolicy {
			return nil, iso7816.SWWrongData
		}
	}
	s, found := iso7816.FindTLV(list, tagECPrivate)
	if !found {
		return nil, iso7816.SWWrongData
	}
	priv, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), s.Value)
	if err != nil {
		return nil, iso7816.SWWrongData
	}
	pin, touch, ok := parsePolicies(cmd.P2, list)
	if !ok {
		return nil, iso7816.SWWrongData
	}
	return nil, storeSlot(ctx, cmd.P2, slotKey{algP256, pin, touch, originImported, priv})
}

// slotAuth is GENERAL AUTHENTICATE with a key slot (SP 800-73-4 Part 2
// §3.2.4, Appendix A.4/A.5):
//
//   - 7C { 82 00, 81 digest } signs digest (1 to 32 bytes, used as is,
//     as ECDSA takes a hash) and answers 7C { 82 DER signature };
//   - 7C { 82 00, 85 point } agrees a key with the peer's uncompressed
//     point (ECDH) and answers 7C { 82 shared X coordinate }.
//
// The slot's PIN policy applies: never, once (the PIN was verified in this
// session) or always (the PIN was verified since the last PIN-always
// operation; this one uses that verification up).
func slotAuth(ctx *card.Context, cmd iso7816.Command) ([]byte, iso7816.SW) {
	k, ok := loadSlot(ctx, cmd.P2)
	if !ok {
		return nil, iso7816.SWRefDataNotFound
	}
	if cmd.P1 != k.alg {
		return nil, iso7816.SWIncorrectP1P2
	}
	d, ok := parseDynAuth(cmd.Data)
	if !ok || len(d.vals[tagResponse]) != 0 {
		return nil, iso7816.SWWrongData
	}
	sign := d.only(tagResponse, tagChallenge) && len(d.vals[tagChallenge]) > 0 && len(d.vals[tagChallenge]) <= digestMax
	agree := d.only(tagResponse, tagExponent) && len(d.vals[tagExponent]) == pointLen
	if !sign && !agree {
		return nil, iso7816.SWWrongData
	}
	if !policySatisfied(ctx, k.pinPolicy) {
		return nil, iso7816.SWSecurityStatus
	}
	var out []byte
	if sign {
		sig, err := ecdsa.SignASN1(random(ctx), k.priv, d.vals[tagChallenge])
		if err != nil {
			return nil, iso7816.SWUnknown
		}
		out = sig
	} else {
		peer, err := ecdh.P256().NewPublicKey(d.vals[tagExponent])
		if err != nil {
			return nil, iso7816.SWWrongData
		}
		priv, err := k.priv.ECDH()
		if err != nil {
			return nil, iso7816.SWUnknown
		}
		if out, err = priv.ECDH(peer); err != nil {
			return nil, iso7816.SWWrongData
		}
	}
	return iso7816.AppendTLV(nil, tagDynAuth, iso7816.AppendTLV(nil, tagResponse, out)), iso7816.SWOK
}

// policySatisfied checks a PIN policy, using up a PIN-always
// verification.
func policySatisfied(ctx *card.Context, policy byte) bool {
	switch policy {
	case pinPolicyNever:
		return true
	case pinPolicyAlways:
		fresh := ctx.RAM.Get(ramPINFresh) != nil && pinVerified(ctx)
		ctx.RAM.Delete(ramPINFresh)
		return fresh
	}
	return pinVerified(ctx)
}

// getMetadata handles GET METADATA (00 F7 00 ref, YubiKey 5.3): a list of
// TLVs about the PIN (80), the PUK (81), the management key (9B) or a key
// slot; 6A82 for an empty slot.
func getMetadata(ctx *card.Context, cmd iso7816.Command) ([]byte, iso7816.SW) {
	if cmd.P1 != 0 || len(cmd.Data) != 0 {
		return nil, iso7816.SWIncorrectP1P2
	}
	flag := func(b bool) []byte {
		if b {
			return []byte{1}
		}
		return []byte{0}
	}
	var out []byte
	switch ref := cmd.P2; {
	case ref == refPIN || ref == refPUK:
		out = iso7816.AppendTLV(out, tagMetaAlgorithm, []byte{algPIN})
		out = iso7816.AppendTLV(out, tagMetaDefault, flag(isDefault(ctx, ref)))
		out = iso7816.AppendTLV(out, tagMetaRetries, []byte{byte(tryLimit(ctx, ref)), byte(triesLeft(ctx, ref))})
	case ref == refMgmt:
		alg, _ := mgmtKey(ctx)
		out = iso7816.AppendTLV(out, tagMetaAlgorithm, []byte{alg})
		out = iso7816.AppendTLV(out, tagMetaPolicy, []byte{pinPolicyDefault, touchPolicyNever})
		out = iso7816.AppendTLV(out, tagMetaDefault, flag(ctx.NVM.Get(keyMgmt) == nil))
	case isKeySlot(ref):
		k, ok := loadSlot(ctx, ref)
		if !ok {
			return nil, iso7816.SWNotFound
		}
		pub, ok := pointObject(&k.priv.PublicKey)
		if !ok {
			return nil, iso7816.SWUnknown
		}
		out = iso7816.AppendTLV(out, tagMetaAlgorithm, []byte{k.alg})
		out = iso7816.AppendTLV(out, tagMetaPolicy, []byte{k.pinPolicy, k.touchPolicy})
		out = iso7816.AppendTLV(out, tagMetaOrigin, []byte{k.origin})
		out = iso7816.AppendTLV(out, tagMetaPublic, pub)
	default:
		return nil, iso7816.SWIncorrectP1P2
	}
	return out, iso7816.SWOK
}
