package audio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	in := make([]float64, 1000)
	for i := range in {
		in[i] = 0.8 * math.Sin(2*math.Pi*1200*float64(i)/Rate)
	}
	in = append(in, 2, -2) // clipped
	var buf bytes.Buffer
	if err := WriteWAV(&buf, Rate, in); err != nil {
		t.Fatal(err)
	}
	if buf.Len() != 44+2*len(in) {
		t.Fatalf("file is %d bytes, want %d", buf.Len(), 44+2*len(in))
	}
	out, rate, err := ReadWAV(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if rate != Rate || len(out) != len(in) {
		t.Fatalf("got %d samples at %d Hz, want %d at %d", len(out), rate, len(in), Rate)
	}
	for i := range in {
		want := max(-1, min(1, in[i]))
		if math.Abs(out[i]-want) > 1.0/16384 {
			t.Fatalf("sample %d: got %v, want %v", i, out[i], want)
		}
	}
}

// wav builds a WAV file by hand, with an extra chunk before the data.
func wav(tag uint16, channels, bits int, rate uint32, dataSize uint32, data []byte) []byte {
	var b []byte
	b = append(b, "RIFF"...)
	b = binary.LittleEndian.AppendUint32(b, 0)
	b = append(b, "WAVEfmt "...)
	b = binary.LittleEndian.AppendUint32(b, 16)
	b = binary.LittleEndian.AppendUint16(b, tag)
	b = binary.LittleEndian.AppendUint16(b, uint16(channels))
	b = binary.LittleEndian.AppendUint32(b, rate)
	b = binary.LittleEndian.AppendUint32(b, rate*uint32(channels*bits/8))
	b = binary.LittleEndian.AppendUint16(b, uint16(channels*bits/8))
	b = binary.LittleEndian.AppendUint16(b, uint16(bits))
	b = append(b, "LIST"...)
	b = binary.LittleEndian.AppendUint32(b, 3)
	b = append(b, 1, 2, 3, 0) // odd size, padded
	b = append(b, "data"...)
	b = binary.LittleEndian.AppendUint32(b, dataSize)
	return append(b, data...)
}

func TestFormats(t *testing.T) {
	f32 := binary.LittleEndian.AppendUint32(nil, math.Float32bits(0.5))
	f32 = binary.LittleEndian.AppendUint32(f32, math.Float32bits(-0.25)) // second channel, dropped
	tests := []struct {
		name string
		file []byte
		want []float64
	}{
		{"u8", wav(formatPCM, 1, 8, 8000, 2, []byte{192, 64}), []float64{0.5, -0.5}},
		{"s16 stereo", wav(formatPCM, 2, 16, 8000, 8, []byte{0, 0x40, 0, 0, 0, 0xC0, 0, 0}), []float64{0.5, -0.5}},
		{"s24", wav(formatPCM, 1, 24, 8000, 3, []byte{0, 0, 0x40}), []float64{0.5}},
		{"s32", wav(formatPCM, 1, 32, 8000, 4, []byte{0, 0, 0, 0xC0}), []float64{-0.5}},
		{"f32 stereo", wav(formatFloat, 2, 32, 8000, 8, f32), []float64{0.5}},
		{"streamed size", wav(formatPCM, 1, 16, 8000, 0xFFFFFFFF, []byte{0, 0x40, 0, 0x40}), []float64{0.5, 0.5}},
		{"trailing half frame", wav(formatPCM, 1, 16, 8000, 0, []byte{0, 0x40, 0}), []float64{0.5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, rate, err := ReadWAV(bytes.NewReader(tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if rate != 8000 || len(got) != len(tt.want) {
				t.Fatalf("got %v at %d Hz, want %v", got, rate, tt.want)
			}
			for i := range got {
				if math.Abs(got[i]-tt.want[i]) > 1e-6 {
					t.Fatalf("got %v, want %v", got, tt.want)
				}
			}
		})
	}
}

func TestBadFiles(t *testing.T) {
	tests := map[string][]byte{
		"empty":        nil,
		"not riff":     []byte("RIFX\x00\x00\x00\x00WAVE"),
		"no data":      wav(formatPCM, 1, 16, 8000, 0, nil)[:36],
		"mu-law":       wav(7, 1, 8, 8000, 1, []byte{0}),
		"no channels":  wav(formatPCM, 0, 16, 8000, 2, []byte{0, 0}),
		"silly rate":   wav(formatPCM, 1, 16, 1, 2, []byte{0, 0}),
		"huge claimed": wav(formatPCM, 1, 16, 8000, 0xFFFFFFF0, nil),
	}
	for name, file := range tests {
		if _, _, err := ReadWAV(bytes.NewReader(file)); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: got %v, want ErrFormat", name, err)
		}
	}
}

func FuzzReadWAV(f *testing.F) {
	var buf bytes.Buffer
	if err := WriteWAV(&buf, Rate, []float64{0, 0.5, -0.5, 1}); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add(wav(formatFloat, 2, 32, 8000, 0, make([]byte, 16)))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, _, err := ReadWAV(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error %v does not wrap ErrFormat", err)
			}
			return
		}
		for _, v := range s {
			if !(v >= -1 && v <= 1) {
				t.Fatalf("sample %v out of range", v)
			}
		}
	})
}

// BenchmarkReadWAV reads a minute of 16-bit audio, the modem and DTMF
// tools' input; x-realtime is how many times faster than it plays.
func BenchmarkReadWAV(b *testing.B) {
	in := make([]float64, 60*Rate)
	for i := range in {
		in[i] = 0.5 * math.Sin(2*math.Pi*1200*float64(i)/Rate)
	}
	var buf bytes.Buffer
	if err := WriteWAV(&buf, Rate, in); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(buf.Len()))
	for b.Loop() {
		if _, _, err := ReadWAV(bytes.NewReader(buf.Bytes())); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(60/(b.Elapsed().Seconds()/float64(b.N)), "x-realtime")
}
