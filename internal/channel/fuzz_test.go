package channel

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/flynn/noise"
)

// FuzzReadFrame reads a stream of frames: every frame it returns is within
// the limit, and framing them again reproduces the bytes consumed.
func FuzzReadFrame(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 3, 'a', 'b', 'c', 0, 0})
	f.Add([]byte{0x10, 0x00})
	f.Add([]byte{0x10, 0x01, 1})
	f.Add([]byte{0, 5, 1, 2})
	f.Add([]byte{0xFF})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		var again []byte
		buf := make([]byte, 0, 16)
		for {
			frame, err := readFrame(r, buf)
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrFrameTooLarge) {
					t.Fatalf("readFrame() = %v, want io.EOF, io.ErrUnexpectedEOF or ErrFrameTooLarge", err)
				}
				if err == io.EOF && len(again) != len(in) {
					t.Fatalf("readFrame() = io.EOF after %d of %d bytes", len(again), len(in))
				}
				break
			}
			if len(frame) > MaxFrame {
				t.Fatalf("readFrame() = %d bytes, over MaxFrame", len(frame))
			}
			again = binary.BigEndian.AppendUint16(again, uint16(len(frame)))
			again = append(again, frame...)
			buf = frame
		}
		if !bytes.HasPrefix(in, again) {
			t.Fatalf("frames re-encoded = % x, not a prefix of the input % x", again, in)
		}
	})
}

// fuzzKeys are fixed so that corpus entries stay meaningful.
var (
	fuzzDevice = fixedKey(1)
	fuzzServer = fixedKey(2)
)

func fixedKey(b byte) noise.DHKey {
	k, err := KeyFromPrivate(bytes.Repeat([]byte{b}, KeyLen))
	if err != nil {
		panic(err)
	}
	return k
}

// FuzzAccept feeds Accept arbitrary bytes as message 1 (and what follows):
// no panic, only handshake errors, and anything accepted came from the
// registered device.
func FuzzAccept(f *testing.F) {
	f.Add(validMessage1(f, fuzzDevice, fuzzServer))
	f.Add([]byte{0, 96})
	f.Add([]byte{0, 0})
	f.Add([]byte{0xFF, 0xFF, 0})
	scfg := ServerConfig{Keys: []noise.DHKey{fuzzServer}, Authorize: registry(fuzzDevice)}
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := Accept(context.Background(), rw{bytes.NewReader(in), io.Discard}, scfg)
		if err != nil {
			if !errors.Is(err, ErrHandshake) && !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("Accept() = %v, want ErrHandshake or ErrUnauthorized", err)
			}
			return
		}
		if !bytes.Equal(c.PeerStatic(), fuzzDevice.Public) {
			t.Fatalf("Accept() = peer %x, want the registered device", c.PeerStatic())
		}
	})
}
