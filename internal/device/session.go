package device

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"cardlink/internal/link"
	"cardlink/internal/protocol"
	"cardlink/internal/wallet"
)

// ErrSessionClosed is returned by an exchange on a Session that was
// closed, or that an earlier exchange left unusable (its error is
// wrapped too): open another.
var ErrSessionClosed = errors.New("device session closed")

// Session is a secure channel to the server kept open for several
// exchanges, one at a time: a device that stays connected (a shop's
// terminal, a device on a line of its own, a busy day of sales) makes the
// Noise handshake once and then authenticates cards, approves purchases
// and moves purse money over it. Authenticate, Buy, Load and Unload are
// each Open, one exchange and Close.
//
// An exchange that fails other than by the server's refusal (a
// *protocol.Error: no such purchase, card refused…) leaves the
// conversation in a state the device cannot vouch for — a message may be
// half sent, a reply unread, ctx ended mid-exchange — and closes the
// Session: later exchanges return ErrSessionClosed. A wrong PIN or a card
// pulled out is such a failure too; open a new Session for the next card.
// The server also ends a session it has not heard from for its idle
// timeout: a device keeps a Session only while it is busy.
type Session struct {
	mu      sync.Mutex // one exchange at a time
	s       *session
	l       link.Link // the link the channel runs over
	pub     []byte
	release func()
	err     error // why the session is unusable; nil while it is open
}

// Open makes the secure channel to the server over l, as Authenticate
// does (the newest pinned key first, then opts.Redial for the older
// ones), and announces the device (Hello with opts.Features). opts.Memory
// is where a server key update arriving on the session is pinned; the
// holder verification fields of opts are not used. ctx bounds the
// opening only; each exchange has its own. The caller closes l after
// Close, as for Authenticate.
func Open(ctx context.Context, l link.Link, id Identity, opts AuthOptions) (*Session, error) {
	if err := id.Validate(); err != nil {
		return nil, fmt.Errorf("opening session: %w", err)
	}
	s, err := open(ctx, l, id, opts)
	if err != nil {
		return nil, fmt.Errorf("opening session: %w", err)
	}
	return s, nil
}

// open is Open without the identity check, its errors unwrapped.
func open(ctx context.Context, l link.Link, id Identity, opts AuthOptions) (*Session, error) {
	conn, pub, cur, release, err := dial(ctx, l, id, opts)
	if err != nil {
		return nil, err
	}
	s := &Session{s: &session{conn: conn, mem: opts.Memory}, l: cur, pub: pub, release: release}
	// Bounded by ctx like any exchange; a failure releases the links.
	if err := s.exchange(ctx, func(ss *session) error {
		return ss.send(&protocol.Hello{Software: Software, Features: opts.Features})
	}); err != nil {
		return nil, err
	}
	return s, nil
}

// ServerKey is the pinned server key the channel was made with.
func (s *Session) ServerKey() []byte { return s.pub }

// ServerKeys are the keys a server key update told the device to pin
// (newest first) during a rotation, or nil when none came yet.
func (s *Session) ServerKeys() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.s.newKeys
}

// Close ends the session and closes the links Open opened for older
// keys (never the l given to Open). It is safe to call more than once.
func (s *Session) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = ErrSessionClosed
		s.release()
	}
	return nil
}

// exchange runs f on the session: ctx's end closes the link, and a
// failure that is not the server's refusal closes the session.
func (s *Session) exchange(ctx context.Context, f func(*session) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		if errors.Is(s.err, ErrSessionClosed) {
			return s.err
		}
		return fmt.Errorf("%w: %w", ErrSessionClosed, s.err)
	}
	if err := ctx.Err(); err != nil {
		return err // nothing started: the session stays usable
	}
	stop := context.AfterFunc(ctx, func() { s.l.Close() })
	err := f(s.s)
	closed := !stop() // ctx ended meanwhile: the link is closed
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	var perr *protocol.Error
	switch {
	case err != nil && !errors.As(err, &perr):
		s.err = err
	case closed:
		// f finished first: its outcome stands, the session does not.
		s.err = fmt.Errorf("link closed when the exchange's context ended: %w", ctx.Err())
	default:
		return err
	}
	s.release()
	return err
}

// Authenticate authenticates the card over the session, as the function
// Authenticate does over a channel of its own; opts.Features, Redial and
// Memory are Open's.
func (s *Session) Authenticate(ctx context.Context, card *wallet.Client, opts AuthOptions) (res Result, err error) {
	info, err := prepareAuth(ctx, card, opts)
	if err != nil {
		return Result{}, fmt.Errorf("authenticating: %w", err)
	}
	defer forgetUnused(ctx, card, opts, func() bool { return res.Counter == 0 })
	if res, err = s.authenticate(ctx, info, card, opts); err != nil {
		return res, fmt.Errorf("authenticating: %w", err)
	}
	return res, nil
}

// authenticate is the exchange of Authenticate, with the card read and
// the holder verified on it.
func (s *Session) authenticate(ctx context.Context, info wallet.Info, card *wallet.Client, opts AuthOptions) (res Result, err error) {
	err = s.exchange(ctx, func(ss *session) error {
		res, err = ss.authenticate(ctx, info, card, opts)
		return err
	})
	res.ServerKey, res.ServerKeys = s.pub, s.ServerKeys()
	return res, err
}

// Buy approves one purchase with the card over the session, as the
// function Buy does over a channel of its own; opts.Features, Redial and
// Memory are Open's.
func (s *Session) Buy(ctx context.Context, card *wallet.Client, opts BuyOptions) (res BuyResult, err error) {
	info, err := prepareBuy(ctx, card, &opts)
	if err != nil {
		return BuyResult{}, fmt.Errorf("buying: %w", err)
	}
	defer func() { forgetUnused(ctx, card, opts.AuthOptions, func() bool { return res.Counter == 0 }) }()
	if res, err = s.buy(ctx, info, card, &opts); err != nil {
		return res, fmt.Errorf("buying: %w", err)
	}
	return res, nil
}

// buy is the exchange of Buy, with the card read.
func (s *Session) buy(ctx context.Context, info wallet.Info, card *wallet.Client, opts *BuyOptions) (res BuyResult, err error) {
	err = s.exchange(ctx, func(ss *session) error {
		res, err = ss.buy(ctx, info, card, opts)
		return err
	})
	res.ServerKey, res.ServerKeys = s.pub, s.ServerKeys()
	return res, err
}

// Load loads the card's purse over the session, as the function Load
// does over a channel of its own.
func (s *Session) Load(ctx context.Context, card *wallet.Client, opts LoadOptions) (PurseResult, error) {
	res, err := s.purse(ctx, card, opts, protocol.PurseKindLoad)
	if err != nil {
		return res, fmt.Errorf("loading purse: %w", err)
	}
	return res, nil
}

// Unload moves money from the card's purse back to the holder's account
// over the session, as the function Unload does over a channel of its
// own.
func (s *Session) Unload(ctx context.Context, card *wallet.Client, opts LoadOptions) (PurseResult, error) {
	res, err := s.purse(ctx, card, opts, protocol.PurseKindUnload)
	if err != nil {
		return res, fmt.Errorf("unloading purse: %w", err)
	}
	return res, nil
}
