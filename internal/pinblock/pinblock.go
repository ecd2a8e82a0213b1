// Package pinblock owns the online PIN's wire form: the ISO 9564-1:2017
// format 4 PIN block (AES, 16 bytes), which the device builds from what the
// holder keyed in and the server opens to check, and the key both derive for
// it from their Noise session.
//
// It is pure computation over the standard library's crypto: it must not
// import the channel, the device, the server or the store, so that both
// ends of the channel can use it. It never logs and never keeps a PIN.
package pinblock

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
)

// Size is the length of a format 4 PIN block in bytes (one AES block).
const Size = 16

// PIN and PAN lengths a format 4 block can carry (ISO 9564-1:2017 §9.4.2).
const (
	MinPINLen = 4
	MaxPINLen = 12
	MaxPANLen = 19
)

// The plain-text PIN field (ISO 9564-1:2017 §9.4.2.2), as nibbles:
//
//	C N P P P P P/A … P/A A A | R R R R R R R R R R R R R R R R
//	0 1 2                  15   16 ………………………………………………………………………… 31
//
// C = 4 (the format), N = the PIN length 4..C, P = a PIN digit, A = the fill
// nibble A up to nibble 15, then 8 random bytes (16 nibbles 0..F).
//
// The plain-text PAN field (§9.4.2.3):
//
//	M A A A A A A A A A A A A A/0 … A/0 0 0 …… 0
//	0 1 ……………………………… 12 13 ………… 19  20 …… 31
//
// M = PAN length − 12 (0 for a PAN of 12 digits or fewer, then the PAN is
// right-justified in 12 digits with leading zeros), the PAN's digits, and
// 0 pad nibbles.
const (
	controlFormat4 = 0x4
	fillNibble     = 0xA
	randomLen      = 8 // bytes 8..15 of the PIN field
	panMinField    = 12
)

// kdfInfo separates SessionKey from every other key derived from a Noise
// handshake hash.
const kdfInfo = "cardlink/pinblock/v1"

// KeySize is the length of the key SessionKey derives (AES-128).
const KeySize = 16

// ErrInvalid is returned by Decrypt when the deciphered PIN field is not a
// format 4 PIN field: the block was made under another key or for another
// PAN, or it was damaged. Wrong keys and PANs give a random-looking field
// that passes the checks with a probability below 1 in 10^7, so a wrong key
// is an error, not silently a wrong PIN.
var ErrInvalid = errors.New("not a format 4 PIN field")

// Encrypt builds and enciphers the format 4 PIN block for pin (4..12
// decimal digits) and pan (1..19 decimal digits; cardlink uses the 16-digit
// card number) under key, an AES-128, -192 or -256 key:
// E(K, E(K, PIN field) ⊕ PAN field) (ISO 9564-1:2017 §9.4.2.4). The PIN
// field's last 8 bytes come from rand (crypto/rand.Reader when nil), so two
// encryptions of one PIN differ. Errors name the bad argument, never its
// value.
func Encrypt(key []byte, pin, pan string, rand io.Reader) ([Size]byte, error) {
	var out [Size]byte
	b, err := newCipher(key)
	if err != nil {
		return out, fmt.Errorf("encrypting PIN block: %w", err)
	}
	panField, err := panField(pan)
	if err != nil {
		return out, fmt.Errorf("encrypting PIN block: %w", err)
	}
	field, err := pinField(pin, rand)
	if err != nil {
		return out, fmt.Errorf("encrypting PIN block: %w", err)
	}
	b.Encrypt(out[:], field[:])
	for i := range out {
		out[i] ^= panField[i]
	}
	b.Encrypt(out[:], out[:])
	clear(field[:])
	return out, nil
}

// Decrypt deciphers a format 4 PIN block made for pan under key and
// returns the PIN. It returns ErrInvalid (wrapped) when the deciphered PIN
// field fails any check: control nibble 4, length 4..12, digits 0..9, fill
// nibbles A. It never panics, whatever block holds.
func Decrypt(key []byte, block [Size]byte, pan string) (string, error) {
	b, err := newCipher(key)
	if err != nil {
		return "", fmt.Errorf("decrypting PIN block: %w", err)
	}
	panField, err := panField(pan)
	if err != nil {
		return "", fmt.Errorf("decrypting PIN block: %w", err)
	}
	var field [Size]byte
	b.Decrypt(field[:], block[:])
	for i := range field {
		field[i] ^= panField[i]
	}
	b.Decrypt(field[:], field[:])
	pin, ok := parsePINField(field)
	clear(field[:])
	if !ok {
		return "", fmt.Errorf("decrypting PIN block: %w", ErrInvalid)
	}
	return pin, nil
}

// SessionKey derives the PIN block key of one device↔server session from
// the Noise handshake hash both ends share (channel.Conn.HandshakeHash):
// HKDF-SHA256(secret = handshakeHash, salt = none, info =
// "cardlink/pinblock/v1"), KeySize bytes. It panics if handshakeHash is
// empty, which is a programmer error.
func SessionKey(handshakeHash []byte) []byte {
	if len(handshakeHash) == 0 {
		panic("pinblock: SessionKey with an empty handshake hash")
	}
	k, err := hkdf.Key(sha256.New, handshakeHash, nil, kdfInfo, KeySize)
	if err != nil {
		// Only a key length over 255 hash lengths fails; KeySize is 16.
		panic("pinblock: " + err.Error())
	}
	return k
}

// newCipher checks the key size and makes the block cipher.
func newCipher(key []byte) (cipher.Block, error) {
	switch len(key) {
	case 16, 24, 32:
	default:
		return nil, fmt.Errorf("key of %d bytes, want 16, 24 or 32", len(key))
	}
	return aes.NewCipher(key)
}

// digits reports whether s is made of ASCII decimal digits only.
func digits(s string) bool {
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// setNibble sets nibble i (0 is the high nibble of byte 0) of b to v.
func setNibble(b []byte, i int, v byte) {
	if i%2 == 0 {
		b[i/2] = b[i/2]&0x0F | v<<4
	} else {
		b[i/2] = b[i/2]&0xF0 | v&0x0F
	}
}

// nibble returns nibble i of b.
func nibble(b []byte, i int) byte {
	return b[i/2] >> (4 * (1 - i%2)) & 0x0F
}

// pinField builds the plain-text PIN field.
func pinField(pin string, r io.Reader) ([Size]byte, error) {
	var f [Size]byte
	if len(pin) < MinPINLen || len(pin) > MaxPINLen || !digits(pin) {
		return f, fmt.Errorf("PIN is not %d to %d decimal digits", MinPINLen, MaxPINLen)
	}
	setNibble(f[:], 0, controlFormat4)
	setNibble(f[:], 1, byte(len(pin)))
	for i := 2; i < 2*(Size-randomLen); i++ {
		v := byte(fillNibble)
		if i-2 < len(pin) {
			v = pin[i-2] - '0'
		}
		setNibble(f[:], i, v)
	}
	if r == nil {
		r = rand.Reader
	}
	if _, err := io.ReadFull(r, f[Size-randomLen:]); err != nil {
		return f, fmt.Errorf("reading PIN block fill: %w", err)
	}
	return f, nil
}

// parsePINField checks a plain-text PIN field and returns the PIN.
func parsePINField(f [Size]byte) (string, bool) {
	n := int(nibble(f[:], 1))
	if nibble(f[:], 0) != controlFormat4 || n < MinPINLen || n > MaxPINLen {
		return "", false
	}
	pin := make([]byte, n)
	for i := 2; i < 2*(Size-randomLen); i++ {
		v := nibble(f[:], i)
		switch {
		case i-2 < n && v <= 9:
			pin[i-2] = '0' + v
		case i-2 >= n && v == fillNibble:
		default:
			return "", false
		}
	}
	return string(pin), true
}

// panField builds the plain-text PAN field.
func panField(pan string) ([Size]byte, error) {
	var f [Size]byte
	if len(pan) < 1 || len(pan) > MaxPANLen || !digits(pan) {
		return f, fmt.Errorf("PAN is not 1 to %d decimal digits", MaxPANLen)
	}
	m := max(0, len(pan)-panMinField)
	setNibble(f[:], 0, byte(m))
	// Digits start at nibble 1; a short PAN is right-justified in 12.
	start := 1 + max(0, panMinField-len(pan))
	for i := range len(pan) {
		setNibble(f[:], start+i, pan[i]-'0')
	}
	return f, nil
}
