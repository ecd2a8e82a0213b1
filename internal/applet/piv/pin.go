package piv

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"io"

	"cardlink/internal/card"
	"cardlink/internal/card/nvm"
	"cardlink/internal/iso7816"
)

// Reference data blocks (SP 800-73-4 Part 2 §2.4.3): 8 bytes, the value
// padded with FF. The PIN is 6 to 8 ASCII digits; the PUK 6 to 8 bytes
// other than FF (YubiKeys accept any such PUK).
const (
	refBlockLen = 8
	refMinLen   = 6
	saltLen     = 16
)

// p1ResetStatus is VERIFY's P1 FF: reset the PIN's security status
// (SP 800-73-4 Part 2 §3.2.1).
const p1ResetStatus = 0xFF

// validBlock reports whether b is a well-formed padded PIN (ref 80) or PUK
// (ref 81).
func validBlock(ref byte, b []byte) bool {
	if len(b) != refBlockLen {
		return false
	}
	n := bytes.IndexByte(b, 0xFF)
	if n < 0 {
		n = refBlockLen
	}
	if n < refMinLen {
		return false
	}
	for i, c := range b {
		switch {
		case i >= n && c != 0xFF:
			return false
		case i < n && ref == refPIN && (c < '0' || c > '9'):
			return false
		}
	}
	return true
}

// padBlock pads v with FF to a reference data block.
func padBlock(v []byte) []byte {
	b := bytes.Repeat([]byte{0xFF}, refBlockLen)
	copy(b, v)
	return b
}

// refKeys are the NVM keys and factory values of the PIN or the PUK.
type refKeys struct {
	hash, tries, max string
	def              []byte
	defTries         int
}

func keysFor(ref byte) refKeys {
	if ref == refPUK {
		return refKeys{keyPUKHash, keyPUKTries, keyPUKMax, defaultPUK, defaultPUKTries}
	}
	return refKeys{keyPINHash, keyPINTries, keyPINMax, defaultPIN, defaultPINTries}
}

// tryLimit returns the try limit of ref.
func tryLimit(ctx *card.Context, ref byte) int {
	k := keysFor(ref)
	if v := ctx.NVM.Get(k.max); len(v) == 1 && v[0] > 0 {
		return int(v[0])
	}
	return k.defTries
}

// triesLeft returns the tries left for ref.
func triesLeft(ctx *card.Context, ref byte) int {
	if v := ctx.NVM.Get(keysFor(ref).tries); len(v) == 1 {
		return int(v[0])
	}
	return tryLimit(ctx, ref)
}

// isDefault reports whether ref still has its factory value.
func isDefault(ctx *card.Context, ref byte) bool {
	return ctx.NVM.Get(keysFor(ref).hash) == nil
}

// refHash is what the card stores for a PIN or PUK:
// SHA-256(salt || reference || block).
func refHash(salt []byte, ref byte, block []byte) []byte {
	h := sha256.New()
	h.Write(salt)
	h.Write([]byte{ref})
	h.Write(block)
	return h.Sum(nil)
}

// matches compares block with ref's reference data in constant time.
func matches(ctx *card.Context, ref byte, block []byte) bool {
	k := keysFor(ref)
	want := ctx.NVM.Get(k.hash)
	if want == nil {
		return subtle.ConstantTimeCompare(padBlock(k.def), block) == 1
	}
	got := refHash(ctx.NVM.Get(keySalt), ref, block)
	return subtle.ConstantTimeCompare(want, got) == 1
}

// newSalt returns the card's salt, or fresh random bytes to store with
// the first hash.
func newSalt(ctx *card.Context) ([]byte, bool) {
	if s := ctx.NVM.Get(keySalt); len(s) == saltLen {
		return s, true
	}
	s := make([]byte, saltLen)
	if _, err := io.ReadFull(random(ctx), s); err != nil {
		return nil, false
	}
	return s, true
}

// putRef stores block as ref's new reference data inside tx.
func putRef(tx *nvm.Tx, salt []byte, ref byte, block []byte) {
	tx.Put(keySalt, salt)
	tx.Put(keysFor(ref).hash, refHash(salt, ref, block))
}

// attempt runs one try-counted comparison of block with ref: it refuses a
// blocked reference (6983), decrements and persists the try counter in its
// own update, and only then compares. On a mismatch it answers 63Cx with
// the tries left. On a match it runs success in a second update that also
// restores the counter; the comparison counts only if that update commits.
func attempt(ctx *card.Context, ref byte, block []byte, success func(tx *nvm.Tx)) iso7816.SW {
	k := keysFor(ref)
	left := triesLeft(ctx, ref)
	if left == 0 {
		return iso7816.SWAuthBlocked
	}
	left--
	if err := ctx.NVM.Update(func(tx *nvm.Tx) error {
		tx.Put(k.tries, []byte{byte(left)})
		return nil
	}); err != nil {
		return commitSW(err)
	}
	if !matches(ctx, ref, block) {
		return iso7816.SWTriesLeft(left)
	}
	limit := tryLimit(ctx, ref)
	if err := ctx.NVM.Update(func(tx *nvm.Tx) error {
		tx.Put(k.tries, []byte{byte(limit)})
		if success != nil {
			success(tx)
		}
		return nil
	}); err != nil {
		return commitSW(err)
	}
	return iso7816.SWOK
}

// forgetPIN ends the PIN's security status.
func forgetPIN(ctx *card.Context) {
	ctx.RAM.Delete(ramPINOK)
	ctx.RAM.Delete(ramPINFresh)
}

// verify handles VERIFY (00 20 00 80, SP 800-73-4 Part 2 §3.2.1): with an
// 8-byte block it verifies the PIN; without data it reports the status
// (9000 verified, 63Cx tries left, 6983 blocked); P1 FF without data
// resets the status.
func verify(ctx *card.Context, cmd iso7816.Command) ([]byte, iso7816.SW) {
	if cmd.P2 != refPIN {
		return nil, iso7816.SWRefDataNotFound
	}
	switch cmd.P1 {
	case 0:
	case p1ResetStatus:
		if len(cmd.Data) != 0 {
			return nil, iso7816.SWWrongData
		}
		forgetPIN(ctx)
		return nil, iso7816.SWOK
	default:
		return nil, iso7816.SWIncorrectP1P2
	}
	if len(cmd.Data) == 0 {
		left := triesLeft(ctx, refPIN)
		switch {
		case left == 0:
			return nil, iso7816.SWAuthBlocked
		case pinVerified(ctx):
			return nil, iso7816.SWOK
		}
		return nil, iso7816.SWTriesLeft(left)
	}
	if len(cmd.Data) != refBlockLen {
		return nil, iso7816.SWWrongData
	}
	sw := attempt(ctx, refPIN, cmd.Data, nil)
	if !sw.OK() {
		forgetPIN(ctx)
		return nil, sw
	}
	ctx.RAM.Set(ramPINOK, []byte{1})
	ctx.RAM.Set(ramPINFresh, []byte{1})
	return nil, iso7816.SWOK
}

// changeReference handles CHANGE REFERENCE DATA (00 24 00 80 for the PIN,
// 00 24 00 81 for the PUK; SP 800-73-4 Part 2 §3.2.2): data is the current
// block followed by the new one.
func changeReference(ctx *card.Context, cmd iso7816.Command) ([]byte, iso7816.SW) {
	if cmd.P1 != 0 {
		return nil, iso7816.SWIncorrectP1P2
	}
	ref := cmd.P2
	if ref != refPIN && ref != refPUK {
		return nil, iso7816.SWRefDataNotFound
	}
	if len(cmd.Data) != 2*refBlockLen {
		return nil, iso7816.SWWrongData
	}
	old, next := cmd.Data[:refBlockLen], cmd.Data[refBlockLen:]
	if !validBlock(ref, next) {
		return nil, iso7816.SWWrongData
	}
	salt, ok := newSalt(ctx)
	if !ok {
		return nil, iso7816.SWUnknown
	}
	sw := attempt(ctx, ref, old, func(tx *nvm.Tx) { putRef(tx, salt, ref, next) })
	if ref == refPIN && !sw.OK() {
		forgetPIN(ctx)
	}
	return nil, sw
}

// resetRetry handles RESET RETRY COUNTER (00 2C 00 80, SP 800-73-4 Part 2
// §3.2.3): data is the PUK block followed by the new PIN block. It counts
// a PUK try; on success the PIN is replaced and its counter restored.
func resetRetry(ctx *card.Context, cmd iso7816.Command) ([]byte, iso7816.SW) {
	if cmd.P1 != 0 {
		return nil, iso7816.SWIncorrectP1P2
	}
	if cmd.P2 != refPIN {
		return nil, iso7816.SWRefDataNotFound
	}
	if len(cmd.Data) != 2*refBlockLen {
		return nil, iso7816.SWWrongData
	}
	puk, pin := cmd.Data[:refBlockLen], cmd.Data[refBlockLen:]
	if !validBlock(refPIN, pin) {
		return nil, iso7816.SWWrongData
	}
	salt, ok := newSalt(ctx)
	if !ok {
		return nil, iso7816.SWUnknown
	}
	limit := tryLimit(ctx, refPIN)
	forgetPIN(ctx)
	return nil, attempt(ctx, refPUK, puk, func(tx *nvm.Tx) {
		putRef(tx, salt, refPIN, pin)
		tx.Put(keyPINTries, []byte{byte(limit)})
	})
}

// setPINRetries handles SET PIN RETRIES (00 FA P1 P2, YubiKey): P1 and P2
// (1..255) become the try limits of the PIN and PUK, which are reset to
// their defaults. It needs the management key and the PIN.
func setPINRetries(ctx *card.Context, cmd iso7816.Command) ([]byte, iso7816.SW) {
	if len(cmd.Data) != 0 {
		return nil, iso7816.SWWrongData
	}
	if cmd.P1 == 0 || cmd.P2 == 0 {
		return nil, iso7816.SWIncorrectP1P2
	}
	if !mgmtAuthenticated(ctx) || !pinVerified(ctx) {
		return nil, iso7816.SWSecurityStatus
	}
	if err := ctx.NVM.Update(func(tx *nvm.Tx) error {
		tx.Put(keyPINMax, []byte{cmd.P1})
		tx.Put(keyPINTries, []byte{cmd.P1})
		tx.Put(keyPUKMax, []byte{cmd.P2})
		tx.Put(keyPUKTries, []byte{cmd.P2})
		tx.Delete(keyPINHash)
		tx.Delete(keyPUKHash)
		return nil
	}); err != nil {
		return nil, commitSW(err)
	}
	forgetPIN(ctx)
	return nil, iso7816.SWOK
}

// reset handles RESET (00 FB 00 00, YubiKey): when both the PIN and the
// PUK are blocked it erases every key, object and secret of the applet
// (the serial stays) and the card is as new. Otherwise 6985.
func reset(ctx *card.Context, cmd iso7816.Command) ([]byte, iso7816.SW) {
	if cmd.P1 != 0 || cmd.P2 != 0 {
		return nil, iso7816.SWIncorrectP1P2
	}
	if triesLeft(ctx, refPIN) != 0 || triesLeft(ctx, refPUK) != 0 {
		return nil, iso7816.SWConditionsNotSatisfied
	}
	if err := ctx.NVM.Update(func(tx *nvm.Tx) error {
		for _, k := range tx.Keys(keyPrefix) {
			if k != keySerial {
				tx.Delete(k)
			}
		}
		return nil
	}); err != nil {
		return nil, commitSW(err)
	}
	ctx.RAM.Clear()
	return nil, iso7816.SWOK
}
