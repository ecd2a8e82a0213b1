package piv

import "strings"

// Test hooks into the FASC-N codec.
var (
	DecodeFASCN      = decodeFASCN
	EncodeFASCNChars = encodeFASCN
)

// FASCNString renders decoded FASC-N characters: SS as "[", FS as "|", ES
// as "]", digits as themselves; the LRC is left out.
func FASCNString(chars []byte) string {
	var b strings.Builder
	for _, ch := range chars[:fascnChars-1] {
		switch ch {
		case fascnSS:
			b.WriteByte('[')
		case fascnFS:
			b.WriteByte('|')
		case fascnES:
			b.WriteByte(']')
		default:
			b.WriteByte('0' + ch)
		}
	}
	return b.String()
}
