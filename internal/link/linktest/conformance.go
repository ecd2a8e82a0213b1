package linktest

import (
	"bytes"
	"io"
	"testing"

	"cardlink/internal/link"
)

// Run is the conformance suite every link.Link implementation passes.
// newPair returns two connected ends, fresh for each subtest; Run closes
// them. The suite makes no assumption about buffering (net.Pipe has none),
// so every write runs beside its read.
func Run(t *testing.T, newPair func(t *testing.T) (a, b link.Link)) {
	t.Run("ordered both ways", func(t *testing.T) {
		a, b := newPair(t)
		defer a.Close()
		defer b.Close()
		ab := pattern(10000, 1)
		ba := pattern(7000, 7)
		errc := make(chan error, 2)
		go func() { errc <- writeChunks(a, ab, 97) }()
		go func() { errc <- writeChunks(b, ba, 131) }()
		gotAB := make([]byte, len(ab))
		gotBA := make([]byte, len(ba))
		go func() {
			_, err := io.ReadFull(a, gotBA)
			errc <- err
		}()
		if _, err := io.ReadFull(b, gotAB); err != nil {
			t.Fatalf("reading a→b: %v", err)
		}
		for range 3 {
			if err := <-errc; err != nil {
				t.Fatalf("writing or reading: %v", err)
			}
		}
		if !bytes.Equal(gotAB, ab) {
			t.Errorf("a→b delivered other bytes than written")
		}
		if !bytes.Equal(gotBA, ba) {
			t.Errorf("b→a delivered other bytes than written")
		}
	})
	t.Run("close ends the stream after its data", func(t *testing.T) {
		a, b := newPair(t)
		defer b.Close()
		go func() {
			a.Write([]byte("last words"))
			a.Close()
		}()
		got, err := io.ReadAll(b)
		if err != nil || string(got) != "last words" {
			t.Errorf("ReadAll(peer of closed end) = %q, %v, want \"last words\", nil", got, err)
		}
	})
	t.Run("close unblocks read", func(t *testing.T) {
		a, b := newPair(t)
		defer b.Close()
		errc := make(chan error, 1)
		go func() {
			_, err := a.Read(make([]byte, 1))
			errc <- err
		}()
		a.Close()
		if err := <-errc; err == nil {
			t.Errorf("Read() on an end closed meanwhile = nil error, want an error")
		}
	})
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*31)
	}
	return b
}

func writeChunks(w io.Writer, b []byte, chunk int) error {
	for len(b) > 0 {
		n, err := w.Write(b[:min(chunk, len(b))])
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}
