package iso7816

import (
	"bytes"
	"reflect"
	"testing"
)

func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{
		"00A40400", "00CA006E10", "00B0000000", "0020008004313233 34",
		"00A4040005A00000030800", "00B00000000100", "00B00000000000",
		"00DA0000000002AABB", "00870000000001AA0102", "00A4040000", "00A40400000000AA",
	} {
		f.Add(h(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := ParseCommand(in)
		if err != nil {
			return
		}
		out, err := c.Bytes()
		if err != nil {
			t.Fatalf("ParseCommand(%X).Bytes() error %v", in, err)
		}
		if !bytes.Equal(out, in) {
			t.Fatalf("ParseCommand(%X).Bytes() = %X, want the input", in, out)
		}
	})
}

func FuzzParseResponse(f *testing.F) {
	for _, s := range []string{"9000", "AABBCC6282", "6110", "90"} {
		f.Add(h(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := ParseResponse(in)
		if err != nil {
			if len(in) >= 2 {
				t.Fatalf("ParseResponse(%X) error %v, want nil", in, err)
			}
			return
		}
		if out := r.Bytes(); !bytes.Equal(out, in) {
			t.Fatalf("ParseResponse(%X).Bytes() = %X, want the input", in, out)
		}
		_ = r.SW.String()
		if err := r.SW.Err(); err != nil {
			_ = err.Error()
		}
	})
}

func FuzzParseTLV(f *testing.F) {
	for _, s := range []string{
		"5A03112233", "5A01AA9F36020102", "5FC102017E", "7C06810082 02ABCD",
		"61074F0079034F01AA", "538180" + string(bytes.Repeat([]byte("00"), 128)),
		"5381050102030405", "70805A01AA0000", "5F818181 00",
	} {
		f.Add(h(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		list, err := ParseTLV(in)
		if err != nil {
			return
		}
		var out []byte
		for _, o := range list {
			out = o.appendTo(out)
		}
		if !bytes.Equal(out, in) {
			t.Fatalf("ParseTLV(%X) re-encodes to %X, want the input", in, out)
		}
		// Encoding from Value (Children dropped) gives the same bytes.
		out = out[:0]
		for _, o := range list {
			out = AppendTLV(out, o.Tag, o.Value)
		}
		if !bytes.Equal(out, in) {
			t.Fatalf("ParseTLV(%X) re-encodes from Value to %X, want the input", in, out)
		}
	})
}

func FuzzParseATR(f *testing.F) {
	for _, tt := range realATRs {
		f.Add(tt.in)
	}
	f.Add(h("3B808131FE458B"))
	f.Add(h("3B8101AA00"))
	f.Fuzz(func(t *testing.T, in []byte) {
		a, err := ParseATR(in)
		if err != nil {
			return
		}
		enc, err := a.Bytes()
		if err != nil {
			t.Fatalf("ParseATR(%X).Bytes() error %v", in, err)
		}
		back, err := ParseATR(enc)
		if err != nil {
			t.Fatalf("ParseATR(%X) (re-encoded from %X) error %v", enc, in, err)
		}
		if !reflect.DeepEqual(back, a) {
			t.Fatalf("ParseATR(%X) = %+v, want %+v as parsed from %X", enc, back, a, in)
		}
		enc2, err := back.Bytes()
		if err != nil || !bytes.Equal(enc2, enc) {
			t.Fatalf("ParseATR(%X).Bytes() = %X, %v, want the input", enc, enc2, err)
		}
		if len(enc) > len(in) {
			t.Fatalf("ParseATR(%X).Bytes() = %X, longer than the input", in, enc)
		}
	})
}
