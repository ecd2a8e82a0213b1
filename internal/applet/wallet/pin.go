package wallet

import (
	"crypto/sha256"
	"crypto/subtle"
	"math/bits"

	"cardlink/internal/card"
	"cardlink/internal/card/nvm"
	"cardlink/internal/iso7816"
	"cardlink/internal/txn"
)

// Reference data qualifiers (P2 of VERIFY, CHANGE REFERENCE DATA and RESET
// RETRY COUNTER; ISO/IEC 7816-4 §11.5.6, specific reference data).
const (
	refPIN = 0x81
	refPUK = 0x82 // only inside the stored hash; the PUK is presented by RESET RETRY COUNTER
	refBio = 0x91
)

// Try limits (docs/wallet-applet.md, "Holder verification").
const (
	pinTryLimit = 3
	pukTryLimit = 10
	bioTryLimit = 5
)

// PIN blocks: ISO 9564-1 format 2.
const (
	pinBlockLen = 8
	pinMinLen   = 4
	pinMaxLen   = 12
	pukDigits   = 8
)

// Biometric templates: a 512-bit binary feature vector (as iris codes and
// binarized fingerprint or face embeddings are), matched by Hamming
// distance.
const (
	// BioTemplateLen is the size in bytes of an enrolled or presented
	// biometric template (512 bits).
	BioTemplateLen = 64
	// DefaultBioThreshold is the largest Hamming distance (in bits, 12.5%
	// of 512) at which a presented template matches the enrolled one, unless
	// personalization wrote another threshold (tag DF2A).
	DefaultBioThreshold = 64
	// MaxBioThreshold is the largest threshold personalization accepts
	// (25% of the bits; unrelated templates differ in about 50%).
	MaxBioThreshold = 128
)

// p1ResetStatus is VERIFY's P1 FF: reset the verification status of the
// reference (ISO/IEC 7816-4 §11.5.6).
const p1ResetStatus = 0xFF

// pinBlockDigits checks that b is an ISO 9564-1 format 2 PIN block (control
// nibble 2, length 4..12, BCD digits, F filler) and returns the PIN length.
func pinBlockDigits(b []byte) (int, bool) {
	if len(b) != pinBlockLen || b[0]>>4 != 2 {
		return 0, false
	}
	n := int(b[0] & 0x0F)
	if n < pinMinLen || n > pinMaxLen {
		return 0, false
	}
	for i := range 2 * (pinBlockLen - 1) {
		nib := b[1+i/2] >> (4 * (1 - i%2)) & 0x0F
		if i < n && nib > 9 || i >= n && nib != 0x0F {
			return 0, false
		}
	}
	return n, true
}

// secretHash is what the card stores for a PIN or PUK:
// SHA-256(salt || reference || block).
func secretHash(salt []byte, ref byte, block []byte) []byte {
	h := sha256.New()
	h.Write(salt)
	h.Write([]byte{ref})
	h.Write(block)
	return h.Sum(nil)
}

// matchSecret compares block with the stored hash in constant time.
func matchSecret(ctx *card.Context, hashKey string, ref byte, block []byte) bool {
	want := ctx.NVM.Get(hashKey)
	got := secretHash(ctx.NVM.Get(keySalt), ref, block)
	return len(want) == len(got) && subtle.ConstantTimeCompare(want, got) == 1
}

// matchBio reports whether the presented template is within the threshold
// Hamming distance of the enrolled one. It looks at every byte, whatever
// the outcome.
func matchBio(ctx *card.Context, tmpl []byte) bool {
	enrolled := ctx.NVM.Get(keyBioTmpl)
	th := ctx.NVM.Get(keyBioThresh)
	if len(enrolled) != BioTemplateLen || len(tmpl) != BioTemplateLen || len(th) != 1 {
		return false
	}
	d := 0
	for i := range enrolled {
		d += bits.OnesCount8(enrolled[i] ^ tmpl[i])
	}
	return d <= int(th[0])
}

// tries reads a 1-byte try counter; ok is false if the reference data was
// never written.
func tries(ctx *card.Context, key string) (int, bool) {
	v := ctx.NVM.Get(key)
	if len(v) != 1 {
		return 0, false
	}
	return int(v[0]), true
}

// attempt runs one try-counted comparison: it refuses a blocked reference
// (6983), decrements and persists the try counter in its own update, and
// only then calls match. On a mismatch it answers 63Cx with the tries left.
// On a match it runs success in a second update that also resets the
// counter to limit; the comparison counts only if that update commits.
func attempt(ctx *card.Context, triesKey string, limit int, match func() bool, success func(tx *nvm.Tx)) iso7816.SW {
	left, ok := tries(ctx, triesKey)
	switch {
	case !ok:
		return iso7816.SWRefDataNotFound
	case left == 0:
		return iso7816.SWAuthBlocked
	}
	left--
	if err := ctx.NVM.Update(func(tx *nvm.Tx) error {
		tx.Put(triesKey, []byte{byte(left)})
		return nil
	}); err != nil {
		return commitSW(err)
	}
	if !match() {
		return iso7816.SWTriesLeft(left)
	}
	if err := ctx.NVM.Update(func(tx *nvm.Tx) error {
		tx.Put(triesKey, []byte{byte(limit)})
		if success != nil {
			success(tx)
		}
		return nil
	}); err != nil {
		return commitSW(err)
	}
	return iso7816.SWOK
}

// verify handles VERIFY (00 20 00 81 for the PIN, 00 20 00 91 for the
// biometric; P1 FF resets the verification status).
func verify(ctx *card.Context, cmd iso7816.Command) ([]byte, iso7816.SW) {
	var triesKey, ramKey string
	var limit, dataLen int
	var cvm txn.CVM
	var match func() bool
	switch cmd.P2 {
	case refPIN:
		triesKey, ramKey, limit, dataLen, cvm = keyPINTries, ramPINOK, pinTryLimit, pinBlockLen, txn.CVMOfflinePIN
		match = func() bool { return matchSecret(ctx, keyPINHash, refPIN, cmd.Data) }
	case refBio:
		triesKey, ramKey, limit, dataLen, cvm = keyBioTries, ramBioOK, bioTryLimit, BioTemplateLen, txn.CVMBiometric
		match = func() bool { return matchBio(ctx, cmd.Data) }
	default:
		return nil, iso7816.SWIncorrectP1P2
	}
	switch cmd.P1 {
	case 0:
	case p1ResetStatus:
		if len(cmd.Data) != 0 {
			return nil, iso7816.SWWrongLength
		}
		ctx.RAM.Delete(ramKey)
		if pendingCVM(ctx) == cvm {
			consumeCVM(ctx)
		}
		return nil, iso7816.SWOK
	default:
		return nil, iso7816.SWIncorrectP1P2
	}
	if len(cmd.Data) == 0 { // status query
		left, ok := tries(ctx, triesKey)
		switch {
		case !ok:
			return nil, iso7816.SWRefDataNotFound
		case left == 0:
			return nil, iso7816.SWAuthBlocked
		case ctx.RAM.Get(ramKey) != nil:
			return nil, iso7816.SWOK
		}
		return nil, iso7816.SWTriesLeft(left)
	}
	if len(cmd.Data) != dataLen {
		return nil, iso7816.SWWrongLength
	}
	if cmd.P2 == refPIN {
		if _, ok := pinBlockDigits(cmd.Data); !ok {
			return nil, iso7816.SWWrongData
		}
	}
	sw := attempt(ctx, triesKey, limit, match, nil)
	if !sw.OK() {
		if sw&0xFFF0 == iso7816.SWVerifyFailed {
			ctx.RAM.Delete(ramKey)
			consumeCVM(ctx)
		}
		return nil, sw
	}
	ctx.RAM.Set(ramKey, []byte{1})
	ctx.RAM.Set(ramCVM, []byte{byte(cvm)})
	return nil, iso7816.SWOK
}

// changeReference handles CHANGE REFERENCE DATA (00 24 00 81): data is the
// current PIN block followed by the new one.
func changeReference(ctx *card.Context, cmd iso7816.Command) ([]byte, iso7816.SW) {
	if cmd.P1 != 0 || cmd.P2 != refPIN {
		return nil, iso7816.SWIncorrectP1P2
	}
	if len(cmd.Data) != 2*pinBlockLen {
		return nil, iso7816.SWWrongLength
	}
	old, next := cmd.Data[:pinBlockLen], cmd.Data[pinBlockLen:]
	if _, ok := pinBlockDigits(old); !ok {
		return nil, iso7816.SWWrongData
	}
	if _, ok := pinBlockDigits(next); !ok {
		return nil, iso7816.SWWrongData
	}
	salt := ctx.NVM.Get(keySalt)
	sw := attempt(ctx, keyPINTries, pinTryLimit,
		func() bool { return matchSecret(ctx, keyPINHash, refPIN, old) },
		func(tx *nvm.Tx) { tx.Put(keyPINHash, secretHash(salt, refPIN, next)) })
	return nil, sw
}

// resetRetry handles RESET RETRY COUNTER (00 2C 00 81): data is the PUK
// block followed by the new PIN block. The PUK has its own try counter.
func resetRetry(ctx *card.Context, cmd iso7816.Command) ([]byte, iso7816.SW) {
	if cmd.P1 != 0 || cmd.P2 != refPIN {
		return nil, iso7816.SWIncorrectP1P2
	}
	if len(cmd.Data) != 2*pinBlockLen {
		return nil, iso7816.SWWrongLength
	}
	puk, next := cmd.Data[:pinBlockLen], cmd.Data[pinBlockLen:]
	if _, ok := pinBlockDigits(puk); !ok {
		return nil, iso7816.SWWrongData
	}
	if _, ok := pinBlockDigits(next); !ok {
		return nil, iso7816.SWWrongData
	}
	salt := ctx.NVM.Get(keySalt)
	sw := attempt(ctx, keyPUKTries, pukTryLimit,
		func() bool { return matchSecret(ctx, keyPUKHash, refPUK, puk) },
		func(tx *nvm.Tx) {
			tx.Put(keyPINHash, secretHash(salt, refPIN, next))
			tx.Put(keyPINTries, []byte{pinTryLimit})
		})
	return nil, sw
}
