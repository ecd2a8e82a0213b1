package line

import (
	"bytes"
	"errors"
	"io"
	"math"
	"testing"
	"time"

	"cardlink/internal/audio/impair"
)

var sampleMessages = []message{
	{typ: msgRegister, number: "5551234", window: 800},
	{typ: msgDial, number: "*99#", from: "0123456789", fwd: &impair.Config{
		BandLimit: true, NoiseDBFS: -33.5, AttenuationDB: 6, DriftPPM: -120.25,
		BurstEvery: 2 * time.Second, BurstLength: 150 * time.Millisecond, BurstDBFS: -12, Seed: 1 << 60}},
	{typ: msgDial, number: "1", back: &impair.Config{}},
	{typ: msgAnswer, callID: 7},
	{typ: msgHangup},
	{typ: msgAudio, samples: []int16{0, -32768, 32767, 1}},
	{typ: msgRegistered},
	{typ: msgRinging, callID: 1},
	{typ: msgRing, callID: 2, number: "42"},
	{typ: msgRing, callID: 3},
	{typ: msgConnected, callID: 3, window: 2000, frame: 160},
	{typ: msgRxAudio, rxPos: 160, linePos: 320, txPos: 100, samples: make([]int16, 161)},
	{typ: msgRxAudio, samples: []int16{}},
	{typ: msgEnd, cause: CauseProtocol, text: "3000 samples ahead"},
}

func TestRoundTrip(t *testing.T) {
	for _, m := range sampleMessages {
		b := m.encode(nil)
		got, err := (&reader{r: bytes.NewReader(b)}).read()
		if err != nil {
			t.Errorf("type %#x: %v", m.typ, err)
			continue
		}
		if again := got.encode(nil); !bytes.Equal(again, b) {
			t.Errorf("type %#x: re-encoded as %x, want %x", m.typ, again, b)
		}
	}
}

func TestParseErrors(t *testing.T) {
	dial := (&message{typ: msgDial, number: "1", fwd: &impair.Config{}}).encode(nil)[headerLen:]
	for _, tt := range []struct {
		name string
		typ  byte
		p    []byte
	}{
		{"unknown type", 0x42, nil},
		{"trailing byte", msgHangup, make([]byte, 9)},
		{"short", msgRinging, []byte{1, 2}},
		{"empty number", msgRegister, []byte{version, 0, 0, 0, 0, 0}},
		{"long number", msgRegister, append([]byte{version, 21}, bytes.Repeat([]byte{'1'}, 21)...)},
		{"window too big", msgRegister, []byte{version, 1, '1', 0xff, 0xff, 0, 0}},
		{"odd audio", msgAudio, []byte{1, 2, 3}},
		{"empty audio", msgAudio, nil},
		{"unknown flags", msgDial, func() []byte { b := bytes.Clone(dial); b[len(b)-cfgLen-1] = 4; return b }()},
		{"positive noise", msgDial, func() []byte { b := bytes.Clone(dial); b[len(b)-cfgLen+1] = 1; return b }()},
		{"unknown cause", msgEnd, []byte{99, 0}},
		{"control text", msgEnd, []byte{1, 1, '\n'}},
		{"zero frame", msgConnected, make([]byte, 14)},
	} {
		if _, err := parse(tt.typ, tt.p); !errors.Is(err, ErrMessage) {
			t.Errorf("%s: parse = %v, want ErrMessage", tt.name, err)
		}
	}
	if _, err := (&reader{r: bytes.NewReader([]byte{msgAudio, 0xff, 0xff})}).read(); !errors.Is(err, ErrMessage) {
		t.Errorf("oversized message: %v, want ErrMessage", err)
	}
	if _, err := (&reader{r: bytes.NewReader([]byte{msgAudio, 4, 0, 1})}).read(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated message: %v, want ErrUnexpectedEOF", err)
	}
}

// TestCheckConfig: what a party may ask for, the switch accepts, after
// the wire's rounding too.
func TestCheckConfig(t *testing.T) {
	for _, tt := range []struct {
		name string
		c    impair.Config
		ok   bool
	}{
		{"clean", impair.Config{}, true},
		{"everything", impair.Config{BandLimit: true, NoiseDBFS: -200, AttenuationDB: 120, DriftPPM: -50000,
			BurstEvery: time.Hour, BurstLength: time.Second, BurstDBFS: -3}, true},
		{"noise above full scale", impair.Config{NoiseDBFS: 1}, false},
		{"noise too low for the wire", impair.Config{NoiseDBFS: -201}, false},
		{"attenuation beyond 120 dB", impair.Config{AttenuationDB: 121}, false},
		{"drift", impair.Config{DriftPPM: 50001}, false},
		{"NaN", impair.Config{AttenuationDB: math.NaN()}, false},
		{"bursts without a level", impair.Config{BurstEvery: time.Second, BurstLength: time.Millisecond}, false},
		{"bursts that become endless on the wire", impair.Config{BurstEvery: 1500 * time.Microsecond,
			BurstLength: 1200 * time.Microsecond, BurstDBFS: -10}, false},
	} {
		err := checkConfig(&tt.c)
		if (err == nil) != tt.ok {
			t.Errorf("%s: checkConfig = %v, want ok %v", tt.name, err, tt.ok)
		}
	}
}

func TestPCM(t *testing.T) {
	for v := -32768; v <= 32767; v++ {
		if got := toPCM(fromPCM(int16(v))); got != int16(v) {
			t.Fatalf("toPCM(fromPCM(%d)) = %d", v, got)
		}
	}
	for _, tt := range []struct {
		in   float64
		want int16
	}{{1, 32767}, {-1, -32768}, {2, 32767}, {-2, -32768}, {0.5, 16384}} {
		if got := toPCM(tt.in); got != tt.want {
			t.Errorf("toPCM(%v) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

// FuzzRead feeds a stream of bytes to the message reader: it must not
// panic, and every message it accepts must encode back to its bytes.
func FuzzRead(f *testing.F) {
	var all []byte
	for _, m := range sampleMessages {
		b := m.encode(nil)
		f.Add(b)
		all = append(all, b...)
	}
	f.Add(all)
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &reader{r: bytes.NewReader(data)}
		off := 0
		for {
			m, err := r.read()
			if err != nil {
				return
			}
			b := m.encode(nil)
			if !bytes.Equal(b, data[off:off+len(b)]) {
				t.Fatalf("message at %d re-encodes as %x, read from %x", off, b, data[off:off+len(b)])
			}
			off += len(b)
		}
	})
}
