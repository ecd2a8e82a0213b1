package vpcd

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzFrame reads frames from arbitrary bytes until the stream ends. Every
// frame read must encode back to exactly the bytes it was read from, and the
// reader must end with io.EOF (clean) or io.ErrUnexpectedEOF (cut).
func FuzzFrame(f *testing.F) {
	for _, s := range []string{
		"",
		"0001 04",
		"0001 01 0001 04 000C 00A4040007A0000005270101",
		"0000",
		"00",
		"0004 0102",
		"FFFF 00",
		"0002 9000 0001 00 0001 02",
	} {
		f.Add(mustHex(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		var buf []byte
		consumed := 0
		for {
			p, err := readFrame(r, buf)
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("readFrame() = %v, want EOF or ErrUnexpectedEOF", err)
				}
				if errors.Is(err, io.EOF) && consumed != len(in) {
					t.Fatalf("readFrame() = EOF after %d of %d bytes", consumed, len(in))
				}
				return
			}
			enc, err := appendFrame(nil, p)
			if err != nil {
				t.Fatalf("appendFrame(%d bytes read) = %v", len(p), err)
			}
			if !bytes.Equal(enc, in[consumed:consumed+len(enc)]) {
				t.Fatalf("appendFrame(readFrame(%X)) = %X", in[consumed:consumed+len(enc)], enc)
			}
			consumed += len(enc)
			buf = p[:0]
		}
	})
}
