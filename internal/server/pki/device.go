package pki

import (
	"crypto/sha256"
	"encoding/base32"
	"strings"
)

// deviceIDBytes is how much of the key's SHA-256 a device ID keeps: 80
// bits, 16 base32 characters.
const deviceIDBytes = 10

// DeviceID returns the short, stable identifier of a device with the Noise
// static public key pub (an X25519 key, 32 bytes; the caller checks the
// length): the first 10 bytes of SHA-256(pub) in lower-case base32 without
// padding (RFC 4648 §6), 16 characters. Anyone holding the key can compute
// it again, so an operator can match a device's display to the server's
// records.
func DeviceID(pub []byte) string {
	sum := sha256.Sum256(pub)
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:deviceIDBytes]))
}
