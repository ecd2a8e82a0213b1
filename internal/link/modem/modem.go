// Package modem runs a lossy byte stream over the audio of a telephone
// call: a Stream modulates the bytes written to it onto the call with an
// FSK modem (package fsk) and demodulates what the call delivers into the
// bytes Read returns. Bytes may be lost, corrupted or made up by the line's
// noise; package arq above turns the Stream into a reliable link.Link, and
// Dial and Answer build that link with timeouts that suit the mode.
//
// # Modes and roles
//
// A call has two parties: the one that placed it (Originating) and the one
// that answered (Answering). Each transmits on its own channel:
//
//	Mode     originate sends   answer sends     duplex
//	Bell202  Bell202 1200      Bell202 1200     half: take turns, the caller is arq's Primary
//	V23      V23Back 75        V23 1200         full (forward channel to the caller)
//	Bell103  Bell103 300       Bell103Answer    full
//	V21      V21 300           V21Answer        full
//
// V.23's forward channel goes from the answering side (the server, as in
// videotex) to the caller, whose answers take the 75 bit/s back channel.
//
// # Carrier
//
// A Stream switches its carrier: it sends nothing (the line carries
// silence and its noise) until bytes are written, then the carrier — mark
// tone — for LeadIn bit periods, so that the far receiver detects it and
// settles on its level, then the characters (8N1, back to back), then
// Trailer bit periods of mark so that the last stop bit arrives whole,
// then silence again. Bytes written while the previous transmission is
// still queued on the line (the Audio reports Pending) follow it without a
// new lead-in. This suits half duplex (the line is free for the other
// side between turns) and costs full duplex one lead-in per burst, which
// the line has time for between a request and its answer.
//
// # Echo
//
// A two-wire line returns part of a party's own signal (the hybrid's
// echo). The line simulator (package line) carries the two directions
// separately and does not mix them, so a Stream hears only the far side.
// The receivers filter their own channel all the same: the full-duplex
// modes receive the other channel through fsk's channel filter, which
// tolerates the near transmitter 10 dB louder than the far one.
//
// It imports arq, fsk and audio; it knows nothing of the line simulator
// beyond the Audio interface that *line.Call satisfies.
package modem

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"cardlink/internal/audio"
	"cardlink/internal/link/fsk"
)

// Mode is a modem standard for a whole call (both directions).
type Mode int

// The modes. The zero Mode is not valid.
const (
	Bell202 Mode = iota + 1 // 1200 bit/s half duplex
	V23                     // 1200 bit/s to the caller, 75 bit/s back
	Bell103                 // 300 bit/s full duplex
	V21                     // 300 bit/s full duplex
)

// modeNames are the names ParseMode takes, as `cardlink modem --mode` does.
var modeNames = map[Mode]string{Bell202: "1200", V23: "v23", Bell103: "300", V21: "v21"}

// ParseMode returns the mode called name: "1200" (Bell 202), "v23",
// "300" (Bell 103) or "v21". It fails with an error naming the known modes.
func ParseMode(name string) (Mode, error) {
	for m, n := range modeNames {
		if strings.EqualFold(n, name) {
			return m, nil
		}
	}
	return 0, fmt.Errorf("modem: unknown mode %q (known: 1200, v23, 300, v21)", name)
}

// String returns the mode's name as ParseMode takes it.
func (m Mode) String() string {
	if n, ok := modeNames[m]; ok {
		return n
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// HalfDuplex reports whether the two sides must take turns (Bell 202).
func (m Mode) HalfDuplex() bool { return m == Bell202 }

// Role is a party's side of the call.
type Role int

// The roles.
const (
	Originating Role = iota // placed the call (the device)
	Answering               // answered it (the server)
)

// String returns "originate" or "answer".
func (r Role) String() string {
	if r == Answering {
		return "answer"
	}
	return "originate"
}

// Channels returns the fsk modes a party in role r transmits and
// receives on. It fails for an invalid mode or role.
func (m Mode) Channels(r Role) (tx, rx fsk.Mode, err error) {
	var orig, ans fsk.Mode
	switch m {
	case Bell202:
		orig, ans = fsk.Bell202, fsk.Bell202
	case V23:
		orig, ans = fsk.V23Back, fsk.V23
	case Bell103:
		orig, ans = fsk.Bell103, fsk.Bell103Answer
	case V21:
		orig, ans = fsk.V21, fsk.V21Answer
	default:
		return fsk.Mode{}, fsk.Mode{}, fmt.Errorf("modem: invalid mode %d", int(m))
	}
	switch r {
	case Originating:
		return orig, ans, nil
	case Answering:
		return ans, orig, nil
	}
	return fsk.Mode{}, fsk.Mode{}, fmt.Errorf("modem: invalid role %d", int(r))
}

// Audio is the call a Stream runs on: 8 kHz samples in [-1, 1] both ways.
// *line.Call is one. Read must return from time to time while the call is
// up (a line.Call returns every 20 ms of line time), and with an error once
// it has ended; Write may block to pace the writer. Read and Write are
// called from two goroutines at once.
type Audio interface {
	Read(p []float64) (int, error)
	Write(p []float64) (int, error)
}

// pender is the optional ability of an Audio to say how many written
// samples are not yet on the line.
type pender interface{ Pending() int }

// Defaults for Config's zero fields.
const (
	DefaultLeadIn    = 24 // bit periods of mark before a transmission
	DefaultTrailer   = 4  // bit periods of mark after it
	DefaultAmplitude = fsk.DefaultAmplitude
)

// rxLimit is how many received bytes wait at most for Read; beyond it the
// oldest are dropped (the link above resends).
const rxLimit = 1 << 16

// Config shapes a Stream.
type Config struct {
	Mode Mode
	Role Role
	// LeadIn and Trailer are the bit periods of mark sent before and after
	// a transmission; 0 means DefaultLeadIn and DefaultTrailer.
	LeadIn, Trailer int
	// Amplitude is the transmitter's peak level in (0, 1]; 0 means
	// DefaultAmplitude (−6 dBFS).
	Amplitude float64
}

// ErrClosed is returned by Read and Write after Close.
var ErrClosed = errors.New("modem: stream closed")

// Stats counts what a Stream has done.
type Stats struct {
	BytesSent     int64 // bytes modulated
	Transmissions int64 // carrier turned on (lead-ins sent)
	SamplesSent   int64 // samples written to the call
	BytesRcvd     int64 // bytes demodulated
	Dropped       int64 // received bytes dropped for want of a reader
	FramingErrors int64 // characters with a bad stop bit
	CarrierUps    int64 // times the far carrier was detected
}

// Stream is a lossy byte stream over a call. Read and Write may be called
// from two goroutines at once, Close and Stats from any goroutine.
type Stream struct {
	a              Audio
	cfg            Config
	txMode, rxMode fsk.Mode
	pend           pender // nil if the Audio cannot say
	rxDone         chan struct{}
	closeOnce      sync.Once

	wmu sync.Mutex // serializes Write
	mod *fsk.Modulator
	buf []float64

	mu     sync.Mutex
	cond   *sync.Cond
	rx     []byte
	err    error // why reception ended
	closed bool
	stats  Stats
}

// New starts a Stream over a in the mode and role of cfg: one goroutine
// demodulates what a delivers until Close or until a's Read fails. The
// Stream does not own a: Close stops using it but does not hang up.
// It fails for an invalid Config.
func New(a Audio, cfg Config) (*Stream, error) {
	tx, rx, err := cfg.Mode.Channels(cfg.Role)
	if err != nil {
		return nil, err
	}
	switch {
	case cfg.LeadIn < 0 || cfg.Trailer < 0:
		return nil, fmt.Errorf("modem: negative lead-in %d or trailer %d", cfg.LeadIn, cfg.Trailer)
	case cfg.Amplitude < 0 || cfg.Amplitude > 1:
		return nil, fmt.Errorf("modem: amplitude %v is not in (0, 1]", cfg.Amplitude)
	}
	if cfg.LeadIn == 0 {
		cfg.LeadIn = DefaultLeadIn
	}
	if cfg.Trailer == 0 {
		cfg.Trailer = DefaultTrailer
	}
	if cfg.Amplitude == 0 {
		cfg.Amplitude = DefaultAmplitude
	}
	mod, err := fsk.NewModulator(tx, audio.Rate, cfg.Amplitude)
	if err != nil {
		return nil, fmt.Errorf("modem: %w", err)
	}
	dem, err := fsk.NewDemodulator(rx, audio.Rate)
	if err != nil {
		return nil, fmt.Errorf("modem: %w", err)
	}
	s := &Stream{a: a, cfg: cfg, txMode: tx, rxMode: rx, mod: mod, rxDone: make(chan struct{})}
	s.pend, _ = a.(pender)
	s.cond = sync.NewCond(&s.mu)
	go s.receive(dem)
	return s, nil
}

// Modes returns the fsk modes the Stream transmits and receives on.
func (s *Stream) Modes() (tx, rx fsk.Mode) { return s.txMode, s.rxMode }

// receive demodulates the call until Close or the call's end.
func (s *Stream) receive(dem *fsk.Demodulator) {
	defer close(s.rxDone)
	buf := make([]float64, 1024)
	var ev []fsk.Event
	for {
		n, err := s.a.Read(buf)
		ev = dem.Demodulate(ev[:0], buf[:n])
		if err != nil {
			ev = dem.Flush(ev)
		}
		s.mu.Lock()
		for _, e := range ev {
			switch e.Kind {
			case fsk.Byte:
				s.stats.BytesRcvd++
				if len(s.rx) >= rxLimit {
					s.rx = s.rx[1:]
					s.stats.Dropped++
				}
				s.rx = append(s.rx, e.Byte)
			case fsk.FramingError:
				s.stats.FramingErrors++
			case fsk.CarrierUp:
				s.stats.CarrierUps++
			}
		}
		if len(ev) > 0 {
			s.cond.Broadcast()
		}
		closed := s.closed
		if err != nil && s.err == nil {
			s.err = fmt.Errorf("modem: receiving: %w", err)
			s.cond.Broadcast()
		}
		s.mu.Unlock()
		if err != nil || closed {
			return
		}
	}
}

// Read returns the bytes demodulated so far, waiting for some. Once the
// call has ended it returns what is left, then an error wrapping the
// call's (io.EOF if the Audio returned io.EOF); after Close, ErrClosed.
func (s *Stream) Read(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.rx) == 0 && s.err == nil && !s.closed {
		if len(p) == 0 {
			return 0, nil
		}
		s.cond.Wait()
	}
	if s.closed {
		return 0, ErrClosed
	}
	if len(s.rx) == 0 {
		return 0, s.err
	}
	n := copy(p, s.rx)
	s.rx = s.rx[n:]
	if len(s.rx) == 0 {
		s.rx = nil
	}
	return n, nil
}

// Write modulates p onto the call: after a lead-in unless the previous
// transmission is still queued, the characters, and a trailer. It
// returns once the Audio took every sample (a line.Call then holds at
// most its window of them, not yet on the line). It fails with ErrClosed
// after Close, or with the Audio's error.
func (s *Stream) Write(p []byte) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return 0, ErrClosed
	}
	if len(p) == 0 {
		return 0, nil
	}
	// Continue the carrier if at least two bit periods of the last
	// transmission are still waiting to go out; else raise it anew.
	lead := true
	if s.pend != nil && float64(s.pend.Pending()) >= 2*audio.Rate/s.txMode.Baud {
		lead = false
	}
	s.buf = s.buf[:0]
	if lead {
		s.buf = s.mod.AppendIdle(s.buf, s.cfg.LeadIn)
	}
	s.buf = s.mod.AppendBytes(s.buf, p)
	s.buf = s.mod.AppendIdle(s.buf, s.cfg.Trailer)
	n, err := s.a.Write(s.buf)
	s.mu.Lock()
	if lead {
		s.stats.Transmissions++
	}
	s.stats.SamplesSent += int64(n)
	if err == nil {
		s.stats.BytesSent += int64(len(p))
	}
	s.mu.Unlock()
	if err != nil {
		return 0, fmt.Errorf("modem: sending: %w", err)
	}
	return len(p), nil
}

// Close stops the Stream: Read and Write fail with ErrClosed from then
// on. It waits for the receiving goroutine to stop reading the call (the
// Audio's next Read to return) so that the caller may use the call again,
// for voice; it does not hang up. It returns nil.
func (s *Stream) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.cond.Broadcast()
		s.mu.Unlock()
	})
	<-s.rxDone
	return nil
}

// Stats returns the counts so far.
func (s *Stream) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

var _ io.ReadWriteCloser = (*Stream)(nil)
