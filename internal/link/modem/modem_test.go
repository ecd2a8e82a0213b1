package modem_test

import (
	"bytes"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"cardlink/internal/link/fsk"
	"cardlink/internal/link/modem"
)

func TestParseMode(t *testing.T) {
	for _, m := range []modem.Mode{modem.Bell202, modem.V23, modem.Bell103, modem.V21} {
		got, err := modem.ParseMode(m.String())
		if err != nil || got != m {
			t.Errorf("ParseMode(%q) = %v, %v; want %v", m.String(), got, err, m)
		}
	}
	if _, err := modem.ParseMode("v22bis"); err == nil {
		t.Error("ParseMode(v22bis) = nil error")
	}
}

// TestChannels checks who sends on which channel: the two ends of a call
// receive what the other transmits, and the full-duplex modes put the two
// directions on different tones.
func TestChannels(t *testing.T) {
	for _, m := range []modem.Mode{modem.Bell202, modem.V23, modem.Bell103, modem.V21} {
		otx, orx, err := m.Channels(modem.Originating)
		if err != nil {
			t.Fatal(err)
		}
		atx, arx, err := m.Channels(modem.Answering)
		if err != nil {
			t.Fatal(err)
		}
		if otx != arx || atx != orx {
			t.Errorf("%v: originate sends %v receives %v, answer sends %v receives %v", m, otx.Name, orx.Name, atx.Name, arx.Name)
		}
		if !m.HalfDuplex() && otx == atx {
			t.Errorf("%v: full duplex on one channel %v", m, otx.Name)
		}
	}
	if tx, _, _ := modem.V23.Channels(modem.Answering); tx != fsk.V23 {
		t.Errorf("V.23 answering side sends on %v, want the 1200 bit/s forward channel", tx.Name)
	}
	if _, _, err := modem.Mode(0).Channels(modem.Originating); err == nil {
		t.Error("Mode(0).Channels = nil error")
	}
	if _, _, err := modem.Bell202.Channels(modem.Role(7)); err == nil {
		t.Error("Channels(Role(7)) = nil error")
	}
}

func TestLinkConfig(t *testing.T) {
	c, err := modem.LinkConfig(modem.Bell202, modem.Originating, nil)
	if err != nil || !c.HalfDuplex || !c.Primary || c.BitRate != 1200 {
		t.Errorf("LinkConfig(Bell202, originating) = %+v, %v; want half duplex primary at 1200", c, err)
	}
	c, err = modem.LinkConfig(modem.Bell202, modem.Answering, &modem.Options{Speed: 4})
	if err != nil || !c.HalfDuplex || c.Primary || c.BitRate != 4800 {
		t.Errorf("LinkConfig(Bell202, answering, speed 4) = %+v, %v; want half duplex secondary at 4800", c, err)
	}
	c1, _ := modem.LinkConfig(modem.Bell103, modem.Answering, &modem.Options{Speed: 1})
	c8, _ := modem.LinkConfig(modem.Bell103, modem.Answering, &modem.Options{Speed: 8})
	if c1.HalfDuplex || c8.MinRTO >= c1.MinRTO || c8.GiveUp >= c1.GiveUp {
		t.Errorf("Bell 103 at speed 1: %+v; at speed 8: %+v; want full duplex, shorter timers at speed 8", c1, c8)
	}
	v, _ := modem.LinkConfig(modem.V23, modem.Answering, nil)
	if v.BitRate != 75 || v.MinRTO < 9*time.Second {
		t.Errorf("LinkConfig(V23, answering) = %+v; want 75 bit/s and a timer above a back-channel frame (9.6 s)", v)
	}
	for _, o := range []*modem.Options{{Speed: -1}, {Delay: -time.Second}} {
		if _, err := modem.LinkConfig(modem.Bell103, modem.Originating, o); err == nil {
			t.Errorf("LinkConfig(%+v) = nil error", o)
		}
	}
	if _, err := modem.LinkConfig(0, modem.Originating, nil); err == nil {
		t.Error("LinkConfig(Mode(0)) = nil error")
	}
}

// pipeAudio is an in-memory call: what one end writes the other reads, 160
// samples (20 ms) at a time with silence when nothing was written, like
// the line simulator's clock, but as fast as the reader reads.
type pipeAudio struct {
	in     *[]float64 // what we read
	out    *[]float64 // what the other end reads
	closed chan struct{}
}

// pipeMu guards every pipe's buffers.
var pipeMu sync.Mutex

func pipe() (a, b *pipeAudio) {
	var x, y []float64
	ch := make(chan struct{})
	return &pipeAudio{in: &x, out: &y, closed: ch}, &pipeAudio{in: &y, out: &x, closed: ch}
}

func (p *pipeAudio) Read(buf []float64) (int, error) {
	select {
	case <-p.closed:
		return 0, io.EOF
	case <-time.After(time.Millisecond):
	}
	pipeMu.Lock()
	defer pipeMu.Unlock()
	n := min(len(buf), 160)
	m := copy(buf[:n], *p.in)
	*p.in = (*p.in)[m:]
	clear(buf[m:n])
	return n, nil
}

func (p *pipeAudio) Write(buf []float64) (int, error) {
	pipeMu.Lock()
	defer pipeMu.Unlock()
	*p.out = append(*p.out, buf...)
	return len(buf), nil
}

func (p *pipeAudio) hangup() { close(p.closed) }

// TestStreamPipe runs a Stream pair over an in-memory call: bytes both
// ways, then the call's end is Read's error after the bytes, and Close
// makes Read and Write fail with ErrClosed.
func TestStreamPipe(t *testing.T) {
	a, b := pipe()
	sa, err := modem.New(a, modem.Config{Mode: modem.Bell103, Role: modem.Originating})
	if err != nil {
		t.Fatal(err)
	}
	sb, err := modem.New(b, modem.Config{Mode: modem.Bell103, Role: modem.Answering})
	if err != nil {
		t.Fatal(err)
	}
	want := []byte("hello over the line")
	if _, err := sa.Write(want); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	if _, err := io.ReadFull(sb, got); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("received %q, %v; want %q", got, err, want)
	}
	if st := sa.Stats(); st.BytesSent != int64(len(want)) || st.Transmissions != 1 {
		t.Errorf("sender Stats = %+v, want %d bytes in 1 transmission", st, len(want))
	}
	if st := sb.Stats(); st.BytesRcvd != int64(len(want)) || st.CarrierUps != 1 {
		t.Errorf("receiver Stats = %+v, want %d bytes, 1 carrier", st, len(want))
	}
	a.hangup()
	if _, err := sb.Read(got); !errors.Is(err, io.EOF) {
		t.Errorf("Read after the call ended = %v, want io.EOF", err)
	}
	sa.Close()
	sb.Close()
	if _, err := sa.Write(want); !errors.Is(err, modem.ErrClosed) {
		t.Errorf("Write after Close = %v, want ErrClosed", err)
	}
	if _, err := sa.Read(got); !errors.Is(err, modem.ErrClosed) {
		t.Errorf("Read after Close = %v, want ErrClosed", err)
	}
}

func TestNewBadConfig(t *testing.T) {
	a, _ := pipe()
	for _, c := range []modem.Config{
		{},
		{Mode: modem.Bell103, Role: 3},
		{Mode: modem.Bell103, LeadIn: -1},
		{Mode: modem.Bell103, Amplitude: 2},
	} {
		if s, err := modem.New(a, c); err == nil {
			s.Close()
			t.Errorf("New(%+v) = nil error", c)
		}
	}
}
