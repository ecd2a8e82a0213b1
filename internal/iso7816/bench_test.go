package iso7816

import "testing"

func BenchmarkParseCommand(b *testing.B) {
	in := append(h("00870000 0000FF"), seq(255)...)
	in = append(in, 0x01, 0x00)
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, err := ParseCommand(in); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCommandBytes(b *testing.B) {
	c := Command{INS: 0x87, Data: seq(255), Ne: 256, Extended: true}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Bytes(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseTLV(b *testing.B) {
	// A PIV-style response: 7C { 81 <32 bytes>, 82 <64 bytes> } and a few
	// primitive objects.
	inner := AppendTLV(nil, 0x81, seq(32))
	inner = AppendTLV(inner, 0x82, seq(64))
	in := AppendTLV(nil, 0x7C, inner)
	in = AppendTLV(in, 0x5FC102, seq(3))
	in = AppendTLV(in, 0x53, seq(200))
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, err := ParseTLV(in); err != nil {
			b.Fatal(err)
		}
	}
}
