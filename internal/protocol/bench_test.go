package protocol

import "testing"

func BenchmarkEncode(b *testing.B) {
	b.ReportAllocs()
	m := samples()[4] // AuthResponse, the largest message of an authentication
	for b.Loop() {
		if _, err := Encode(m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	b.ReportAllocs()
	in, err := Encode(samples()[4])
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, err := Decode(in); err != nil {
			b.Fatal(err)
		}
	}
}
