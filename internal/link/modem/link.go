package modem

import (
	"fmt"
	"time"

	"cardlink/internal/link/arq"
)

// Defaults for Options' zero fields.
const (
	// DefaultDelay is a line.Call's default window (2000 samples, 250 ms)
	// plus a frame of the switch (20 ms) and the receiver's decision
	// delay (about 30 ms): how long after Write returns a sample may
	// still be on its way to the far receiver.
	DefaultDelay = 300 * time.Millisecond
)

// Options tune the link Dial and Answer build; the zero Options suits a
// call through the line simulator in real time.
type Options struct {
	// Stream configures the modem; its Mode and Role are set by Dial and
	// Answer.
	Stream Config
	// Speed is how many seconds of line time pass per second of real
	// time (the switch's Config.Speed); 0 means 1. The link's timers run
	// on real time, so they are divided by it.
	Speed float64
	// Delay is the line's latency in line time, beyond the airtime of
	// the bytes (see DefaultDelay); 0 means DefaultDelay.
	Delay time.Duration
	// ARQ, if not nil, is used instead of the Config LinkConfig derives
	// (Dial and Answer still set HalfDuplex and Primary).
	ARQ *arq.Config
}

// Link is the reliable link over a call: an arq.Conn (a link.Link with
// deadlines and Stats) over the modem Stream it owns. Closing it closes
// the Stream (after the link's closing handshake), not the call.
type Link struct {
	*arq.Conn
	stream *Stream
}

// ModemStats returns the modem Stream's counts.
func (l *Link) ModemStats() Stats { return l.stream.Stats() }

// Dial runs the link over a call this party placed (the Originating
// role: the device): a Stream in mode, and arq over it, with a Config
// from LinkConfig. In half duplex (Bell 202) this side is arq's Primary.
// It fails for an invalid mode or Options.
func Dial(a Audio, mode Mode, opts *Options) (*Link, error) {
	return open(a, mode, Originating, opts)
}

// Answer is Dial for the party that answered the call (the server).
func Answer(a Audio, mode Mode, opts *Options) (*Link, error) {
	return open(a, mode, Answering, opts)
}

func open(a Audio, mode Mode, role Role, opts *Options) (*Link, error) {
	if opts == nil {
		opts = &Options{}
	}
	cfg, err := LinkConfig(mode, role, opts)
	if err != nil {
		return nil, err
	}
	sc := opts.Stream
	sc.Mode, sc.Role = mode, role
	s, err := New(a, sc)
	if err != nil {
		return nil, err
	}
	c, err := arq.New(s, cfg)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("modem: starting link: %w", err)
	}
	return &Link{Conn: c, stream: s}, nil
}

// LinkConfig returns the arq.Config for a party in role on a call in
// mode: the bit rate (the slower of the two directions in V.23), half
// duplex with the caller as Primary for Bell 202, a turnaround of the
// lead-in and trailer plus the line's delay, and a retransmission timer
// floor (MinRTO) from the airtime of two largest frames on this side's
// channel, a largest frame and an acknowledgement on the other's, and the
// delay both ways (half duplex: two acknowledgements and two turns);
// MaxRTO is 4 times that, at least 2 s, and GiveUp 3 times MaxRTO, at
// least a minute. All are line time divided by opts.Speed (plus 50 ms of real
// time for the hosts' scheduling), so the link behaves alike at any
// speed of the switch. opts.ARQ, when set, replaces all but HalfDuplex
// and Primary. It fails for an invalid mode, role or Options.
func LinkConfig(mode Mode, role Role, opts *Options) (arq.Config, error) {
	if opts == nil {
		opts = &Options{}
	}
	tx, rx, err := mode.Channels(role)
	if err != nil {
		return arq.Config{}, err
	}
	speed := opts.Speed
	if speed == 0 {
		speed = 1
	}
	if !(speed > 0 && speed <= 1000) {
		return arq.Config{}, fmt.Errorf("modem: speed %v is not in (0, 1000]", opts.Speed)
	}
	if opts.Delay < 0 {
		return arq.Config{}, fmt.Errorf("modem: negative delay %v", opts.Delay)
	}
	if opts.ARQ != nil {
		cfg := *opts.ARQ
		cfg.HalfDuplex, cfg.Primary = mode.HalfDuplex(), mode.HalfDuplex() && role == Originating
		return cfg, cfg.Validate()
	}
	delay := opts.Delay
	if delay == 0 {
		delay = DefaultDelay
	}
	lead := opts.Stream.LeadIn
	if lead == 0 {
		lead = DefaultLeadIn
	}
	trail := opts.Stream.Trailer
	if trail == 0 {
		trail = DefaultTrailer
	}
	// Everything below is line time, turned into real time at the end;
	// the slack for the hosts' scheduling is real time.
	wall := func(d time.Duration) time.Duration { return time.Duration(float64(d) / speed) }
	bits := func(n int, baud float64) time.Duration {
		return time.Duration(float64(n) * float64(time.Second) / baud)
	}
	const slack = 50 * time.Millisecond
	slow := min(tx.Baud, rx.Baud)
	// Raising the carrier and the line's delay, each turn.
	turn := bits(lead+trail, slow) + delay
	frame := arq.FrameLen(arq.DefaultMaxPayload)
	const ack = arq.AckFrameLen
	var rto time.Duration
	if mode.HalfDuplex() {
		// The turn's timer: the peer's answer begins within two
		// acknowledgements' airtime and a turn each way (arq stretches it
		// while bytes arrive).
		rto = bits(10*2*ack, rx.Baud) + 2*turn
	} else {
		// Two largest frames of ours, a largest frame of the peer's (our
		// acknowledgement may wait behind it) and an acknowledgement on
		// the other channel, a lead-in and trailer each way and the delay
		// both ways.
		rto = 2*bits(10*frame, tx.Baud) + bits(10*(frame+ack), rx.Baud) +
			bits(lead+trail, tx.Baud) + bits(lead+trail, rx.Baud) + 2*delay
	}
	maxRTO := max(4*rto, 2*time.Second)
	cfg := arq.Config{
		BitRate:    int(slow * speed),
		HalfDuplex: mode.HalfDuplex(),
		Primary:    mode.HalfDuplex() && role == Originating,
		Turnaround: wall(turn),
		MinRTO:     wall(rto) + slack,
		MaxRTO:     wall(maxRTO) + slack,
		// A call that ends ends the link at once (the Stream's Read
		// fails); GiveUp is for a peer whose modem went quiet on a live
		// call, and must outlast a bad stretch of a noisy line.
		GiveUp: wall(max(3*maxRTO, time.Minute)),
	}
	if err := cfg.Validate(); err != nil {
		return arq.Config{}, fmt.Errorf("modem: %w", err)
	}
	return cfg, nil
}
