package dtmf

import (
	"encoding/binary"
	"math"
	"testing"
	"time"
)

// FuzzDetector feeds arbitrary bytes, read as 16-bit samples or as raw
// float64s (NaNs and infinities included), to both detectors in chunks
// whose sizes come from the input too: they must not panic, must report
// at most one digit per 25 ms and at most one progress event per 50 ms,
// and digits must be keys at increasing times.
func FuzzDetector(f *testing.F) {
	tones, _ := Generate("159#", Params{Tone: 40 * time.Millisecond, Pause: 40 * time.Millisecond})
	var seed []byte
	for _, s := range tones {
		seed = binary.LittleEndian.AppendUint16(seed, uint16(int16(s*32767)))
	}
	f.Add(byte(0), seed)
	f.Add(byte(1), []byte{0, 0, 0, 0, 0, 0, 0xf8, 0x7f, 0, 0, 0, 0, 0, 0, 0xf0, 0x7f})
	f.Add(byte(7), make([]byte, 4000))
	f.Fuzz(func(t *testing.T, mode byte, data []byte) {
		if len(data) > 1<<16 {
			return // longer input only takes longer
		}
		var s []float64
		if mode&1 == 0 {
			for i := 0; i+2 <= len(data); i += 2 {
				s = append(s, float64(int16(binary.LittleEndian.Uint16(data[i:])))/32768)
			}
		} else {
			for i := 0; i+8 <= len(data); i += 8 {
				s = append(s, math.Float64frombits(binary.LittleEndian.Uint64(data[i:])))
			}
		}
		d := NewDetector(Config{})
		p := NewProgressDetector()
		chunk := 1 + int(mode>>1)*17
		var digits []Digit
		var events []ProgressEvent
		for rest := s; len(rest) > 0; {
			n := min(chunk, len(rest))
			digits = append(digits, d.Process(rest[:n])...)
			events = append(events, p.Process(rest[:n])...)
			rest = rest[n:]
		}
		if limit := len(s)/200 + 1; len(digits) > limit {
			t.Fatalf("%d digits from %d samples", len(digits), len(s))
		}
		if limit := len(s)/400 + 1; len(events) > limit {
			t.Fatalf("%d progress events from %d samples", len(events), len(s))
		}
		var last time.Duration = -1
		for _, dg := range digits {
			if _, _, ok := Frequencies(dg.Key); !ok || dg.At <= last {
				t.Fatalf("bad digit sequence %v", digits)
			}
			last = dg.At
		}
	})
}
