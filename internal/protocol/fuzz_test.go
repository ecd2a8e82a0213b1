package protocol

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// FuzzDecode: Decode never panics, fails only with its sentinels, and what
// it accepts re-encodes to exactly the input (one message, one encoding).
func FuzzDecode(f *testing.F) {
	for _, m := range append(samples(), more()...) {
		b, err := Encode(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(msg(TypeHello, "a2 02 01 02 02"))
	f.Add(msg(TypeHello, "bf 02 01 ff"))
	f.Add(msg(TypeChallengeRequest, "a3 01 48 4111111111111112 02 48 0102030405060708 03 01"))
	f.Add(msg(TypeOfferRequest, "a3 01 68 3132333435363738 02 48 4111111111111111 03 48 0102030405060708"))
	f.Add(msg(TypeTransactionResult, "a3 01 50"+strings.Repeat("00", 16)+" 02 11 04 02"))
	f.Add(msg(TypeTransactionResult, "a3 01 50"+strings.Repeat("00", 16)+" 02 18 18 05 81 41 e6"))
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := Decode(in)
		if err != nil {
			for _, s := range []error{ErrTooLarge, ErrVersion, ErrUnknownType, ErrMalformed, ErrInvalid} {
				if errors.Is(err, s) {
					return
				}
			}
			t.Fatalf("Decode(% x) = %v, want one of the sentinels", in, err)
		}
		again, err := Encode(m)
		if err != nil || !bytes.Equal(again, in) {
			t.Fatalf("Encode(Decode(% x)) = % x, %v, want the input", in, again, err)
		}
	})
}
