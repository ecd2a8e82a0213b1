// Package server is the server's device listener: it accepts device
// connections on a net.Listener, runs the Noise handshake of package
// channel with the server's static keys from the store (authorizing only
// registered, unrevoked devices), and answers each device's protocol
// messages through the authentication service (package auth).
//
// It owns connection handling only: deadlines, bounded concurrency,
// decoding errors answered with protocol error codes, and graceful
// shutdown — and the rotation of the server's static key.
//
// # Rotating the server key
//
// A device pins the server's static public keys when it is provisioned and
// talks to no server that lacks all of them, so the server key cannot
// simply be replaced. A rotation has three steps:
//
//  1. The operator adds a new key (RotateKey; 'cardlink server-key
//     rotate'). Both keys are current: every instance, reading the keys
//     from the shared store on each connection, accepts a handshake made
//     to either (channel.ServerConfig.Keys). Devices provisioned from now
//     on pin both, newest first.
//  2. When a device makes its channel with a key that is not the newest
//     (channel.Conn.LocalStatic), the server sends it a protocol.ServerKeys
//     message just before its first reply: the current keys, newest
//     first, down to the one the device used. The message travels inside
//     the channel the old key authenticated, so the device can trust it;
//     the device pins the list in its memory in one atomic update and
//     dials the newest key from then on, falling back to the older pinned
//     keys if that handshake fails. The update costs 91 bytes on the wire
//     with two keys, once per device; a device already on the newest key
//     gets nothing, so the common authentication is unchanged (504 bytes).
//  3. Once the devices have moved, the operator retires the old key
//     (RetireKey; 'cardlink server-key retire'), which refuses to retire
//     the last current key. A device that did not connect during the
//     overlap still pins only the retired key: its handshake fails (the
//     device reports that the server refused it or is not the pinned
//     server) and it must be provisioned again. The server logs each
//     connection made with an older key ("device on an older server
//     key", with the device id), and 'cardlink server-key list' shows
//     when each key was added and retired, so the operator can judge
//     the overlap.
//
// It also relays purchase approvals to the purchase service (package
// purchase, Config.Purchases): an OfferRequest gets a TransactionOffer
// (or, for a purchase the card paid before, its TransactionResult again),
// and the connection then takes the approval (TransactionApproval) or the
// holder's decline (Error with CodeHolderDeclined) of that transaction
// only; any other approval is answered CodeTransactionUnknown.
//
// E-money (package purse, Config.Purses) works alike: a PurseRequest
// gets a TransactionOffer (or, for a load signed before, the PurseLoad),
// the connection then takes the approval or decline of that operation,
// and a LoadReceipt is taken at any time.
//
// A session can also be served over any other link.Link (ServeLink), such
// as the modem and link layer over a telephone call.
//
// It imports auth, purchase, purse, channel, link, protocol, txn and
// store; it must not import a store backend, the HTTP API, the device or
// the card.
package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/flynn/noise"

	"cardlink/internal/channel"
	"cardlink/internal/link"
	"cardlink/internal/protocol"
	"cardlink/internal/server/auth"
	"cardlink/internal/server/purchase"
	"cardlink/internal/server/purse"
	"cardlink/internal/store"
	"cardlink/internal/txn"
)

// Defaults for Config's zero fields.
const (
	DefaultMaxConns         = 256
	DefaultHandshakeTimeout = 30 * time.Second
	DefaultIdleTimeout      = 2 * time.Minute
)

// Config configures a Server.
type Config struct {
	Auth   *auth.Service // required
	Store  store.Store   // required: server keys and devices
	Logger *slog.Logger  // nil discards
	// Purchases, if set, serves purchase approvals (OfferRequest,
	// TransactionApproval, and a holder's decline); nil answers an
	// OfferRequest with CodeUnexpectedMessage.
	Purchases *purchase.Service
	// Purses, if set, serves e-money loads and unloads (PurseRequest,
	// then the approval or decline of the operation offered, and
	// LoadReceipt); nil answers them with CodeUnexpectedMessage.
	Purses *purse.Service

	// MaxConns bounds the connections served at once; further ones wait
	// in the listener's backlog. 0 means DefaultMaxConns.
	MaxConns int
	// HandshakeTimeout bounds the Noise handshake; 0 means
	// DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// IdleTimeout bounds the wait for each message from a device (and
	// each write to it); 0 means DefaultIdleTimeout.
	IdleTimeout time.Duration
}

// Server serves devices. Its methods are safe for concurrent use.
type Server struct {
	cfg Config
	log *slog.Logger

	// The key pairs derived from the store's last key set, by private
	// key: deriving a public key is a scalar multiplication per key and
	// connection.
	keyMu    sync.Mutex
	lastKeys []noise.DHKey
}

// New returns a server for cfg. It panics if cfg.Auth or cfg.Store is nil
// (a programmer error).
func New(cfg Config) *Server {
	if cfg.Auth == nil || cfg.Store == nil {
		panic("server: New without Auth or Store")
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, log: log}
}

// Serve accepts connections on l and serves each in its own goroutine,
// at most MaxConns at once, until ctx ends or l is closed. It closes l.
// When ctx ends it stops accepting, lets each connection finish the
// message it is answering (handshakes in progress are cut), closes them all
// and waits for their goroutines, then returns nil. If l is closed by
// someone else, Serve returns an error wrapping net.ErrClosed; other
// accept errors (such as running out of file descriptors) are logged and
// retried after a pause.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()

	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, s.cfg.MaxConns)
	var backoff time.Duration
	for {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		c, err := l.Accept()
		if err != nil {
			<-sem
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("accepting device connection: %w", err)
			}
			// Out of file descriptors and the like: wait, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accepting device connection", "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return nil
			}
			continue
		}
		backoff = 0
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			s.serveConn(ctx, c)
		}()
	}
}

// serveConn runs one device connection to its end.
func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	s.ServeLink(ctx, c, c.RemoteAddr().String())
}

// readDeadliner and deadliner are the optional abilities of a link to
// bound its blocking calls (net.Conn and arq.Conn have both).
type (
	readDeadliner interface{ SetReadDeadline(time.Time) error }
	deadliner     interface{ SetDeadline(time.Time) error }
)

// ServeLink serves one device session over l — a connection Serve
// accepted, or any other link such as the modem over a telephone call —
// until the device hangs up, the session ends, or ctx ends, and then
// closes l. remote names the peer in the log (an address, a caller id).
//
// When ctx ends, a device waiting to send is cut off at once, and one
// being answered gets its answer first. The idle timeout bounds the wait
// for each message and each write: through l's SetDeadline when it has
// one, otherwise by closing l when it expires. Likewise a device waiting
// to send is cut through SetReadDeadline when l has it, otherwise by
// closing l. ServeLink does not count against MaxConns (Serve does that
// for its own connections). It is safe for concurrent use with other
// sessions.
func (s *Server) ServeLink(ctx context.Context, l link.Link, remote string) {
	defer l.Close()
	var (
		mu      sync.Mutex
		closing bool
		reading bool        // between arm and the end of the read (no SetReadDeadline)
		idle    *time.Timer // closes l after the idle timeout (no SetDeadline)
	)
	rd, hasReadDeadline := l.(readDeadliner)
	d, hasDeadline := l.(deadliner)
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		closing = true
		switch {
		case hasReadDeadline:
			rd.SetReadDeadline(time.Unix(1, 0))
		case reading:
			l.Close()
		}
	})
	defer stop()
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		if idle != nil {
			idle.Stop()
		}
	}()
	// arm sets the deadlines for the next message, unless ctx has ended.
	arm := func() bool {
		mu.Lock()
		defer mu.Unlock()
		if closing {
			return false
		}
		switch {
		case hasDeadline:
			d.SetDeadline(time.Now().Add(s.cfg.IdleTimeout))
		case idle == nil:
			idle = time.AfterFunc(s.cfg.IdleTimeout, func() { l.Close() })
		default:
			idle.Reset(s.cfg.IdleTimeout)
		}
		reading = true
		return true
	}
	// read marks the end of the wait for a message.
	read := func() {
		mu.Lock()
		defer mu.Unlock()
		reading = false
	}
	log := s.log.With("remote", remote)

	keys, err := s.keys(ctx)
	if err != nil {
		log.Error("loading server keys", "err", err)
		return
	}
	var dev store.Device
	authorize := func(pub []byte) error {
		d, err := s.cfg.Store.DeviceByKey(ctx, pub)
		if err != nil {
			return err
		}
		if d.Revoked() {
			return fmt.Errorf("device %s revoked", d.ID)
		}
		dev = d
		return nil
	}
	hctx, cancel := context.WithTimeout(ctx, s.cfg.HandshakeTimeout)
	conn, err := channel.Accept(hctx, l, channel.ServerConfig{Keys: keys, Authorize: authorize})
	cancel()
	if err != nil {
		log.Info("device handshake failed", "err", err)
		return
	}
	log = log.With("device", dev.ID)
	sess, err := s.cfg.Auth.NewSession(dev, conn.HandshakeHash())
	if err != nil {
		log.Error("starting session", "err", err)
		return
	}
	log.Debug("device connected")
	// A device on an older key learns the current ones before the first
	// reply: it is then reading, whatever the link's buffering.
	cs := &connState{sess: sess}
	var update protocol.Message
	if k := keyUpdate(keys, conn.LocalStatic()); k != nil {
		log.Info("device on an older server key", "key", base64.StdEncoding.EncodeToString(conn.LocalStatic()), "newest", base64.StdEncoding.EncodeToString(keys[0].Public))
		update = k
	}
	for arm() {
		b, err := conn.ReadMessage()
		read()
		if err == io.EOF {
			log.Debug("device disconnected")
			return
		}
		if err != nil {
			if ctx.Err() == nil {
				log.Info("reading from device", "err", err)
			}
			return
		}
		m, err := protocol.Decode(b)
		if err != nil {
			log.Info("bad message from device", "err", err)
			s.send(log, conn, &protocol.Error{Code: protocol.CodeFor(err)})
			return
		}
		// The answer is worked out even if ctx ends meanwhile, within
		// the idle timeout.
		mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.IdleTimeout)
		reply, keep := s.handle(mctx, log, cs, m)
		cancel()
		if reply != nil && update != nil {
			if !s.send(log, conn, update) {
				return
			}
			update = nil
		}
		if reply != nil && !s.send(log, conn, reply) {
			return
		}
		if !keep {
			return
		}
	}
}

// connState is what one connection remembers between messages.
type connState struct {
	sess *auth.Session
	// offered is the id of the transaction offered on this connection and
	// not yet answered, or nil: only its approval or decline is taken.
	// offer and offerCard are that offer's bytes, as the store bound and
	// the server sent them, and the card it is bound to: the approval is
	// verified over them (purchase.Service.ApproveOffered).
	offered   []byte
	offer     []byte
	offerCard string
	// purseOffered is the id of the purse operation offered on this
	// connection and not yet answered, or nil.
	purseOffered []byte
}

// forget drops what was offered on the connection: a device that asks
// for something new, or gives up, no longer answers it. A connection
// carries many exchanges (device.Session): a stale offer must not take
// the answer to a later one.
func (cs *connState) forget() {
	cs.offered, cs.offer, cs.offerCard, cs.purseOffered = nil, nil, "", nil
}

// handle answers one message: the reply (nil for none) and whether the
// connection stays open.
func (s *Server) handle(ctx context.Context, log *slog.Logger, cs *connState, m protocol.Message) (protocol.Message, bool) {
	sess := cs.sess
	switch m := m.(type) {
	case *protocol.Hello:
		log.Debug("hello", "software", m.Software, "features", m.Features)
		return nil, true
	case *protocol.ChallengeRequest:
		ch, err := s.cfg.Auth.Challenge(ctx, sess, m)
		if err != nil {
			return s.refuse(log, "challenge", err)
		}
		return ch, true
	case *protocol.AuthResponse:
		r, err := s.cfg.Auth.Verify(ctx, sess, m)
		if err != nil {
			return s.refuse(log, "verify", err)
		}
		log.Info("authentication", "code", r.Code.String(), "cvm", r.CVM)
		return r, true
	case *protocol.OfferRequest:
		if s.cfg.Purchases == nil {
			break
		}
		cs.forget() // a new request: what was offered before is not answered now
		r, err := s.cfg.Purchases.Offer(ctx, sess, m)
		if err != nil {
			return s.refuse(log, "offer", err)
		}
		o, ok := r.(*protocol.TransactionOffer)
		if !ok {
			return r, true // a paid purchase's result, again
		}
		t, err := txn.Parse(o.Transaction)
		if err != nil {
			log.Error("offer failed", "err", fmt.Errorf("parsing own offer: %w", err))
			return &protocol.Error{Code: protocol.CodeInternal}, false
		}
		cs.offered, cs.offer, cs.offerCard = t.ID[:], o.Transaction, string(m.CardNumber)
		return o, true
	case *protocol.PurseRequest:
		if s.cfg.Purses == nil {
			break
		}
		cs.forget()
		r, err := s.cfg.Purses.Request(ctx, sess, m)
		if err != nil {
			return s.refuse(log, "purse request", err)
		}
		if o, ok := r.(*protocol.TransactionOffer); ok {
			t, err := txn.Parse(o.Transaction)
			if err != nil {
				log.Error("purse request failed", "err", fmt.Errorf("parsing own offer: %w", err))
				return &protocol.Error{Code: protocol.CodeInternal}, false
			}
			cs.purseOffered = t.ID[:]
		}
		return r, true
	case *protocol.LoadReceipt:
		if s.cfg.Purses == nil {
			break
		}
		r, err := s.cfg.Purses.Receipt(ctx, sess, m)
		if err != nil {
			return s.refuse(log, "load receipt", err)
		}
		log.Info("load receipt", "code", r.Code.String())
		return r, true
	case *protocol.TransactionApproval:
		if s.cfg.Purses != nil && cs.purseOffered != nil && bytes.Equal(cs.purseOffered, m.ID) {
			cs.purseOffered = nil
			r, err := s.cfg.Purses.Approve(ctx, sess, m)
			if err != nil {
				return s.refuse(log, "purse approval", err)
			}
			return r, true
		}
		if s.cfg.Purchases == nil {
			break
		}
		if cs.offered == nil || !bytes.Equal(cs.offered, m.ID) {
			log.Info("approval refused", "code", protocol.CodeTransactionUnknown.String(), "cause", "no such transaction offered on this connection")
			return &protocol.TransactionResult{ID: m.ID, Code: protocol.CodeTransactionUnknown}, true
		}
		r, err := s.cfg.Purchases.ApproveOffered(ctx, sess, m, cs.offerCard, cs.offer)
		cs.forget()
		if err != nil {
			return s.refuse(log, "approval", err)
		}
		log.Info("transaction", "code", r.Code.String(), "cvm", r.CVM)
		return r, true
	case *protocol.Error:
		if m.Code == protocol.CodeHolderDeclined && cs.purseOffered != nil && s.cfg.Purses != nil {
			id := cs.purseOffered
			cs.purseOffered = nil
			r, err := s.cfg.Purses.Decline(ctx, sess, id)
			if err != nil {
				return s.refuse(log, "purse decline", err)
			}
			return r, true
		}
		if m.Code == protocol.CodeHolderDeclined && cs.offered != nil && s.cfg.Purchases != nil {
			id := cs.offered
			cs.forget()
			r, err := s.cfg.Purchases.Decline(ctx, sess, id)
			if err != nil {
				return s.refuse(log, "decline", err)
			}
			log.Info("transaction", "code", r.Code.String())
			return r, true
		}
		log.Info("device gave up", "code", m.Code.String(), "text", m.Text)
		cs.forget() // left pending (the device did not decline it) until its deadline
		return nil, true
	}
	return &protocol.Error{Code: protocol.CodeUnexpectedMessage}, true
}

// refuse turns a service error into a reply: a *protocol.Error goes to the
// device as it is; anything else is internal, logged, and ends the
// connection.
func (s *Server) refuse(log *slog.Logger, what string, err error) (protocol.Message, bool) {
	var perr *protocol.Error
	if errors.As(err, &perr) {
		log.Info(what+" refused", "code", perr.Code.String())
		return perr, true
	}
	log.Error(what+" failed", "err", err)
	return &protocol.Error{Code: protocol.CodeInternal}, false
}

// send encodes and writes m; it reports whether that worked.
func (s *Server) send(log *slog.Logger, conn *channel.Conn, m protocol.Message) bool {
	b, err := protocol.Encode(m)
	if err != nil {
		log.Error("encoding reply", "type", m.Type().String(), "err", err)
		return false
	}
	if err := conn.WriteMessage(b); err != nil {
		log.Info("writing to device", "err", err)
		return false
	}
	return true
}

// keyUpdate is the ServerKeys message for a device whose channel was made
// with used, one of keys (newest first): the keys down to used, or nil when
// used is the newest.
func keyUpdate(keys []noise.DHKey, used []byte) *protocol.ServerKeys {
	i := slices.IndexFunc(keys, func(k noise.DHKey) bool { return bytes.Equal(k.Public, used) })
	if i <= 0 {
		return nil
	}
	u := &protocol.ServerKeys{}
	for _, k := range keys[:min(i+1, protocol.MaxServerKeys)] {
		u.Keys = append(u.Keys, k.Public)
	}
	if !bytes.Equal(u.Keys[len(u.Keys)-1], used) {
		// More current keys than a device pins: leave the device alone
		// rather than have it drop the key it uses.
		return nil
	}
	return u
}

// ErrLastKey is returned by RetireKey for the last current server key:
// retiring it would leave the server with no key any device has pinned.
var ErrLastKey = errors.New("the last current server key cannot be retired")

// RotateKey adds a new server static key, current from now on beside the
// others, and returns its public half. Devices learn it on their next
// connection (see the package doc). The new key is stored as created
// after every current one even if the clock says otherwise, so that it is
// the newest.
func RotateKey(ctx context.Context, st store.ServerKeys, now time.Time) ([]byte, error) {
	keys, err := st.ServerKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("rotating server key: %w", err)
	}
	for _, k := range keys {
		if !now.After(k.Created) {
			now = k.Created.Add(time.Millisecond)
		}
	}
	k, err := channel.GenerateKey(nil)
	if err != nil {
		return nil, fmt.Errorf("rotating server key: %w", err)
	}
	if err := st.AddServerKey(ctx, store.ServerKey{Public: k.Public, Private: k.Private}, now); err != nil {
		return nil, fmt.Errorf("rotating server key: %w", err)
	}
	return k.Public, nil
}

// RetireKey retires the current server key pub. It returns an error
// wrapping store.ErrNotFound when pub is not a current key (unknown, or
// already retired), and ErrLastKey when it is the only one. The store
// checks for another current key and retires pub in one atomic step
// (store.ErrLastKey), so of operators retiring the last current keys at
// the same instant at least one is refused.
func RetireKey(ctx context.Context, st store.ServerKeys, pub []byte, now time.Time) error {
	keys, err := st.ServerKeys(ctx)
	if err != nil {
		return fmt.Errorf("retiring server key: %w", err)
	}
	// Only to name a retired key as not current: the store keeps a
	// retired key retired without an error.
	if !slices.ContainsFunc(keys, func(k store.ServerKey) bool { return bytes.Equal(k.Public, pub) }) {
		return fmt.Errorf("retiring server key: not a current key: %w", store.ErrNotFound)
	}
	err = st.RetireServerKey(ctx, pub, now)
	switch {
	case errors.Is(err, store.ErrLastKey):
		return fmt.Errorf("retiring server key: %w", ErrLastKey)
	case err != nil:
		return fmt.Errorf("retiring server key: %w", err)
	}
	return nil
}

// keys loads the server's current static keys from the store, on every
// connection so that a rotation or retirement is seen at once. The key
// pairs are derived again only when the private keys differ from the last
// set's; the slice returned is shared and must not be modified.
func (s *Server) keys(ctx context.Context) ([]noise.DHKey, error) {
	sk, err := s.cfg.Store.ServerKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("loading server keys: %w", err)
	}
	if len(sk) == 0 {
		return nil, errors.New("loading server keys: none in the store (run EnsureKey)")
	}
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	if slices.EqualFunc(sk, s.lastKeys, func(k store.ServerKey, d noise.DHKey) bool { return bytes.Equal(k.Private, d.Private) }) {
		return s.lastKeys, nil
	}
	keys := make([]noise.DHKey, 0, len(sk))
	for _, k := range sk {
		dk, err := channel.KeyFromPrivate(k.Private)
		if err != nil {
			return nil, fmt.Errorf("loading server keys: %w", err)
		}
		keys = append(keys, dk)
	}
	s.lastKeys = keys
	return keys, nil
}

// EnsureKey makes sure the store holds a current server static key,
// generating and storing one if it holds
// none, and returns the current public keys, newest first. Two instances
// starting at once may both add a key; both are then current and served.
func EnsureKey(ctx context.Context, st store.ServerKeys) ([][]byte, error) {
	keys, err := st.ServerKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("ensuring server key: %w", err)
	}
	if len(keys) == 0 {
		k, err := channel.GenerateKey(nil)
		if err != nil {
			return nil, fmt.Errorf("ensuring server key: %w", err)
		}
		if err := st.AddServerKey(ctx, store.ServerKey{Public: k.Public, Private: k.Private}, time.Now()); err != nil {
			return nil, fmt.Errorf("ensuring server key: %w", err)
		}
		if keys, err = st.ServerKeys(ctx); err != nil {
			return nil, fmt.Errorf("ensuring server key: %w", err)
		}
	}
	pubs := make([][]byte, len(keys))
	for i, k := range keys {
		pubs[i] = k.Public
	}
	return pubs, nil
}
