package pki

import (
	"crypto/rand"
	"fmt"
	"io"
	"math/big"
)

// cardIIN is the issuer identification prefix of cardlink card numbers: MII 9
// (ISO/IEC 7812-1, assigned by national standards bodies), kept for testing
// and private schemes.
const cardIIN = "9470"

// NewCardNumber returns a fresh 16-digit card number: the cardlink IIN, 11
// random digits and a Luhn check digit. A nil r means crypto/rand.
func NewCardNumber(r io.Reader) (string, error) {
	if r == nil {
		r = rand.Reader
	}
	n, err := rand.Int(r, big.NewInt(100_000_000_000))
	if err != nil {
		return "", fmt.Errorf("drawing card number: %w", err)
	}
	body := fmt.Sprintf("%s%011d", cardIIN, n)
	return body + string(rune('0'+luhnCheck(body))), nil
}

// luhnCheck returns the Luhn check digit for the digits of body.
func luhnCheck(body string) int {
	sum := 0
	double := true // the rightmost body digit is doubled once the check digit is appended
	for i := len(body) - 1; i >= 0; i-- {
		d := int(body[i] - '0')
		if double {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
		double = !double
	}
	return (10 - sum%10) % 10
}
