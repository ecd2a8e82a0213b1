package arq

import (
	"bytes"
	"fmt"
	"io"
	"testing"
	"time"

	"cardlink/internal/link"
	"cardlink/internal/link/linktest"
)

// newPair returns two links over a new lossy pipe; a is the primary in
// half duplex. They are closed when the test ends.
func newPair(t testing.TB, lc linktest.LossyConfig, cfg Config) (a, b *Conn, la, lb *linktest.LossyEnd) {
	t.Helper()
	la, lb = linktest.LossyPipe(lc)
	ca := cfg
	ca.Primary = true
	cb := cfg
	cb.Primary = false
	a, err := New(la, ca)
	if err != nil {
		t.Fatal(err)
	}
	b, err = New(lb, cb)
	if err != nil {
		a.Close()
		t.Fatal(err)
	}
	return a, b, la, lb
}

// lines are the impairments the conformance suite runs under.
var lines = []struct {
	name string
	lc   linktest.LossyConfig
}{
	{"clean", linktest.LossyConfig{}},
	{"BER 1e-4", linktest.LossyConfig{Seed: 1, BER: 1e-4}},
	{"BER 1e-3", linktest.LossyConfig{Seed: 2, BER: 1e-3}},
	{"drops and garbage", linktest.LossyConfig{Seed: 3, Drop: 5e-4, Insert: 5e-4}},
	{"bursts", linktest.LossyConfig{Seed: 4, Burst: 2e-4, BurstLen: 40}},
	{"everything", linktest.LossyConfig{Seed: 5, BER: 3e-4, Drop: 2e-4, Insert: 2e-4, Burst: 1e-4}},
}

func TestConformance(t *testing.T) {
	for _, half := range []bool{false, true} {
		for _, l := range lines {
			name := l.name
			if half {
				name += " half duplex"
			}
			t.Run(name, func(t *testing.T) {
				seed := l.lc.Seed
				linktest.Run(t, func(t *testing.T) (link.Link, link.Link) {
					lc := l.lc
					seed++
					lc.Seed = seed
					a, b, _, _ := newPair(t, lc, Config{HalfDuplex: half, MaxRTO: 200 * time.Millisecond})
					return a, b
				})
			})
		}
	}
}

func TestSmoke(t *testing.T) {
	a, b, _, _ := newPair(t, linktest.LossyConfig{Seed: 9, BER: 1e-3}, Config{MaxRTO: 200 * time.Millisecond})
	want := bytes.Repeat([]byte("hello, lossy world "), 500)
	errc := make(chan error, 1)
	go func() {
		_, err := a.Write(want)
		if err == nil {
			err = a.Close()
		}
		errc <- err
	}()
	got, err := io.ReadAll(b)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("ReadAll = %d bytes, %v", len(got), err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	b.Close()
	fmt.Printf("%+v\n%+v\n", a.Stats(), b.Stats())
}
