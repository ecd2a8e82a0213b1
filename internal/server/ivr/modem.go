package ivr

import (
	"context"
	"fmt"
	"time"

	"cardlink/internal/line"
	"cardlink/internal/link"
	"cardlink/internal/link/arq"
	"cardlink/internal/link/modem"
)

// HangupGrace is the line time the answering modem keeps its carrier
// after its link began closing: enough for its last burst (the
// acknowledgement of the device's fin and its own fin) to go out.
const HangupGrace = 2 * time.Second

// AnswerModem is the Modem of package modem's answering side in mode
// (opts as for modem.Answer; nil for the defaults), with a short close.
//
// In half duplex the answering side is arq's secondary: once the device
// has closed its end (its fin acknowledged) nobody polls it any more, and
// arq lets it linger until the line has been quiet for its longest
// timeout — 8 to 10 s of line time in which the call can do nothing else
// (measured: 9.7 s of a 16.5 s handover). The device needs nothing from
// the IVR after its fin is acknowledged, so this link's Close gives the
// closing handshake HangupGrace of line time and then drops the carrier
// (closes the modem stream), which ends arq's linger as a line down.
func AnswerModem(mode modem.Mode, opts *modem.Options) Modem {
	o := modem.Options{}
	if opts != nil {
		o = *opts
	}
	speed := o.Speed
	if speed == 0 {
		speed = 1
	}
	grace := time.Duration(float64(HangupGrace) / speed)
	return func(_ context.Context, call *line.Call) (link.Link, error) {
		cfg, err := modem.LinkConfig(mode, modem.Answering, &o)
		if err != nil {
			return nil, err
		}
		sc := o.Stream
		sc.Mode, sc.Role = mode, modem.Answering
		s, err := modem.New(call, sc)
		if err != nil {
			return nil, err
		}
		c, err := arq.New(s, cfg)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("starting the modem link: %w", err)
		}
		return &answered{Conn: c, stream: s, grace: grace}, nil
	}
}

// Carrier reports whether the far carrier has been heard since the link
// started (the IVR's no-carrier check).
func (a *answered) Carrier() bool { return a.stream.Stats().CarrierUps > 0 }

// answered is the answering modem's link (an arq.Conn, with its
// deadlines) whose Close drops the carrier after grace.
type answered struct {
	*arq.Conn
	stream *modem.Stream
	grace  time.Duration
}

// Close closes the link as arq does, but for at most grace; then it closes
// the modem stream beneath, which ends the link (arq.ErrLineDown, not
// reported: the peer had closed). It returns once the stream is closed.
func (a *answered) Close() error {
	done := make(chan error, 1)
	go func() { done <- a.Conn.Close() }()
	t := time.NewTimer(a.grace)
	defer t.Stop()
	select {
	case err := <-done:
		a.stream.Close()
		return err
	case <-t.C:
		a.stream.Close()
		<-done
		return nil
	}
}
