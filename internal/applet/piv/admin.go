package piv

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/subtle"
	"io"

	"cardlink/internal/card"
	"cardlink/internal/card/nvm"
	"cardlink/internal/iso7816"
)

// mgmtKeyLen gives the key length of each management key algorithm.
var mgmtKeyLen = map[byte]int{alg3DES: 24, algAES128: 16, algAES192: 24, algAES256: 32}

// SET MANAGEMENT KEY parameters (YubiKey): P1 FF, P2 FF (P2 FE would ask
// for touch, which a virtual card cannot offer), and the data header.
const (
	p1SetMgmt        = 0xFF
	p2SetMgmt        = 0xFF
	mgmtHeaderLength = 3 // algorithm, key reference, length
)

// mgmtKey returns the card management key and its algorithm.
func mgmtKey(ctx *card.Context) (alg byte, key []byte) {
	v := ctx.NVM.Get(keyMgmt)
	if len(v) > 1 && mgmtKeyLen[v[0]] == len(v)-1 {
		return v[0], v[1:]
	}
	return alg3DES, defaultMgmtKey
}

// newBlock returns the block cipher of a management key.
func newBlock(alg byte, key []byte) (cipher.Block, error) {
	if alg == alg3DES {
		return des.NewTripleDESCipher(key)
	}
	return aes.NewCipher(key)
}

// dynAuth is a parsed dynamic authentication template (SP 800-73-4 Part 2
// §3.2.4, Table 7): which of 80, 81, 82 and 85 are present, and their
// values.
type dynAuth struct {
	has  map[iso7816.Tag]bool
	vals map[iso7816.Tag][]byte
}

// parseDynAuth parses 7C { ... } with each inner tag at most once and no
// unknown tags.
func parseDynAuth(b []byte) (dynAuth, bool) {
	children, ok := parseFlatOne(b, tagDynAuth)
	if !ok || len(children) == 0 {
		return dynAuth{}, false
	}
	d := dynAuth{has: map[iso7816.Tag]bool{}, vals: map[iso7816.Tag][]byte{}}
	for _, c := range children {
		switch c.Tag {
		case tagWitness, tagChallenge, tagResponse, tagExponent:
		default:
			return dynAuth{}, false
		}
		if d.has[c.Tag] {
			return dynAuth{}, false
		}
		d.has[c.Tag] = true
		d.vals[c.Tag] = c.Value
	}
	return d, true
}

// only reports whether exactly the given tags are present.
func (d dynAuth) only(tags ...iso7816.Tag) bool {
	if len(d.has) != len(tags) {
		return false
	}
	for _, t := range tags {
		if !d.has[t] {
			return false
		}
	}
	return true
}

// authenticate handles GENERAL AUTHENTICATE (00 87 alg ref, SP 800-73-4
// Part 2 §3.2.4): with the management key (9B) it authenticates the host;
// with a key slot it signs or agrees a key.
func authenticate(ctx *card.Context, cmd iso7816.Command) ([]byte, iso7816.SW) {
	if cmd.P2 == refMgmt {
		return mgmtAuth(ctx, cmd)
	}
	if !isKeySlot(cmd.P2) {
		return nil, iso7816.SWIncorrectP1P2
	}
	return slotAuth(ctx, cmd)
}

// mgmtAuth runs the card management key's challenge-response (SP 800-73-4
// Part 2 Appendix A.1/A.2, as piv-go, yubico-piv-tool and OpenSC drive it):
//
//   - 7C { 80 00 } asks for a witness: the card answers 7C { 80 E(K, W) }
//     for a random block W.
//   - 7C { 80 W, 81 C [, 82 00] } returns the decrypted witness with a host
//     challenge C: if W matches, the host is authenticated and the card
//     answers 7C { 82 E(K, C) }; otherwise 6982.
//   - 7C { 81 00 } asks for a challenge: 7C { 81 C }.
//   - 7C { 82 E(K, C) } answers it: 9000 if right, 6982 otherwise.
//   - with P1 00, 7C { 81 00 } returns random bytes (as many as the key
//     is long) and changes nothing: OpenSC's GET CHALLENGE.
//
// A witness or challenge serves one answer. Any authentication attempt
// first drops the management key's security status.
func mgmtAuth(ctx *card.Context, cmd iso7816.Command) ([]byte, iso7816.SW) {
	alg, key := mgmtKey(ctx)
	d, ok := parseDynAuth(cmd.Data)
	if cmd.P1 == p1Random && ok && d.only(tagChallenge) && len(d.vals[tagChallenge]) == 0 {
		return randomChallenge(ctx, mgmtKeyLen[alg])
	}
	if cmd.P1 != alg {
		return nil, iso7816.SWIncorrectP1P2
	}
	if !ok {
		return nil, iso7816.SWWrongData
	}
	block, err := newBlock(alg, key)
	if err != nil {
		return nil, iso7816.SWUnknown
	}
	bs := block.BlockSize()
	ctx.RAM.Delete(ramMgmtOK)
	witness, challenge := ctx.RAM.Get(ramWitness), ctx.RAM.Get(ramChallenge)
	ctx.RAM.Delete(ramWitness)
	ctx.RAM.Delete(ramChallenge)
	v := d.vals
	switch {
	case d.only(tagWitness) && len(v[tagWitness]) == 0:
		w := make([]byte, bs)
		if _, err := io.ReadFull(random(ctx), w); err != nil {
			return nil, iso7816.SWUnknown
		}
		ctx.RAM.Set(ramWitness, w)
		enc := make([]byte, bs)
		block.Encrypt(enc, w)
		return iso7816.AppendTLV(nil, tagDynAuth, iso7816.AppendTLV(nil, tagWitness, enc)), iso7816.SWOK

	case d.has[tagWitness] && d.has[tagChallenge] && (d.only(tagWitness, tagChallenge) || d.only(tagWitness, tagChallenge, tagResponse) && len(v[tagResponse]) == 0):
		if len(v[tagWitness]) != bs || len(v[tagChallenge]) != bs {
			return nil, iso7816.SWWrongData
		}
		if witness == nil {
			return nil, iso7816.SWConditionsNotSatisfied
		}
		if subtle.ConstantTimeCompare(witness, v[tagWitness]) != 1 {
			return nil, iso7816.SWSecurityStatus
		}
		ctx.RAM.Set(ramMgmtOK, []byte{1})
		enc := make([]byte, bs)
		block.Encrypt(enc, v[tagChallenge])
		return iso7816.AppendTLV(nil, tagDynAuth, iso7816.AppendTLV(nil, tagResponse, enc)), iso7816.SWOK

	case d.only(tagChallenge) && len(v[tagChallenge]) == 0:
		c := make([]byte, bs)
		if _, err := io.ReadFull(random(ctx), c); err != nil {
			return nil, iso7816.SWUnknown
		}
		ctx.RAM.Set(ramChallenge, c)
		return iso7816.AppendTLV(nil, tagDynAuth, iso7816.AppendTLV(nil, tagChallenge, c)), iso7816.SWOK

	case d.only(tagResponse) && len(v[tagResponse]) == bs:
		if challenge == nil {
			return nil, iso7816.SWConditionsNotSatisfied
		}
		want := make([]byte, bs)
		block.Encrypt(want, challenge)
		if subtle.ConstantTimeCompare(want, v[tagResponse]) != 1 {
			return nil, iso7816.SWSecurityStatus
		}
		ctx.RAM.Set(ramMgmtOK, []byte{1})
		return nil, iso7816.SWOK
	}
	return nil, iso7816.SWWrongData
}

// p1Random is GENERAL AUTHENTICATE's P1 when OpenSC asks for random bytes
// (piv_get_challenge: 00 87 00 9B 7C 02 81 00).
const p1Random = 0x00

// randomChallenge answers OpenSC's request for random bytes:
// 7C { 81 <n random bytes> }. It arms nothing and leaves the security
// status as it is.
func randomChallenge(ctx *card.Context, n int) ([]byte, iso7816.SW) {
	c := make([]byte, n)
	if _, err := io.ReadFull(random(ctx), c); err != nil {
		return nil, iso7816.SWUnknown
	}
	return iso7816.AppendTLV(nil, tagDynAuth, iso7816.AppendTLV(nil, tagChallenge, c)), iso7816.SWOK
}

// setMgmtKey handles SET MANAGEMENT KEY (00 FF FF FF, YubiKey): data is
// algorithm || 9B || length || key. It needs the management key. P2 FE
// (touch required) gets 6A86: this card has no touch sensor.
func setMgmtKey(ctx *card.Context, cmd iso7816.Command) ([]byte, iso7816.SW) {
	if cmd.P1 != p1SetMgmt || cmd.P2 != p2SetMgmt {
		return nil, iso7816.SWIncorrectP1P2
	}
	if !mgmtAuthenticated(ctx) {
		return nil, iso7816.SWSecurityStatus
	}
	d := cmd.Data
	if len(d) < mgmtHeaderLength || d[1] != refMgmt || int(d[2]) != len(d)-mgmtHeaderLength {
		return nil, iso7816.SWWrongData
	}
	alg, key := d[0], d[mgmtHeaderLength:]
	if n, ok := mgmtKeyLen[alg]; !ok || n != len(key) {
		return nil, iso7816.SWWrongData
	}
	if _, err := newBlock(alg, key); err != nil {
		return nil, iso7816.SWWrongData
	}
	if err := ctx.NVM.Update(func(tx *nvm.Tx) error {
		if alg == alg3DES && bytes.Equal(key, defaultMgmtKey) {
			tx.Delete(keyMgmt) // back to the factory default
			return nil
		}
		tx.Put(keyMgmt, append([]byte{alg}, key...))
		return nil
	}); err != nil {
		return nil, commitSW(err)
	}
	return nil, iso7816.SWOK
}
