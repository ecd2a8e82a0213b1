// Package server is the server's device listener: it accepts device
// connections on a net.Listener, runs the Noise handshake of package
// channel with the server's static keys from the store (authorizing only
// registered, unrevoked devices), and answers each device's protocol
// messages through the authentication service (package auth).
//
// It owns connection handling only: deadlines, bounded concurrency,
// decoding errors answered with protocol error codes, and graceful
// shutdown. It imports auth, channel, protocol and store; it must not
// import a store backend, the HTTP API, the device or the card.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/flynn/noise"

	"cardlink/internal/channel"
	"cardlink/internal/protocol"
	"cardlink/internal/server/auth"
	"cardlink/internal/store"
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

// serveConn runs one device connection to its end. When ctx ends, a
// device waiting to send is cut off at once, and one being answered gets
// its answer first.
func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	var (
		mu      sync.Mutex
		closing bool
	)
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		closing = true
		c.SetReadDeadline(time.Unix(1, 0))
	})
	defer stop()
	// arm sets the deadlines for the next message, unless ctx has ended.
	arm := func() bool {
		mu.Lock()
		defer mu.Unlock()
		if !closing {
			c.SetDeadline(time.Now().Add(s.cfg.IdleTimeout))
		}
		return !closing
	}
	log := s.log.With("remote", c.RemoteAddr().String())

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
	conn, err := channel.Accept(hctx, c, channel.ServerConfig{Keys: keys, Authorize: authorize})
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
	for arm() {
		b, err := conn.ReadMessage()
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
		reply, keep := s.handle(mctx, log, sess, m)
		cancel()
		if reply != nil && !s.send(log, conn, reply) {
			return
		}
		if !keep {
			return
		}
	}
}

// handle answers one message: the reply (nil for none) and whether the
// connection stays open.
func (s *Server) handle(ctx context.Context, log *slog.Logger, sess *auth.Session, m protocol.Message) (protocol.Message, bool) {
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
	case *protocol.Error:
		log.Info("device gave up", "code", m.Code.String(), "text", m.Text)
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

// keys loads the server's current static keys from the store.
func (s *Server) keys(ctx context.Context) ([]noise.DHKey, error) {
	sk, err := s.cfg.Store.ServerKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("loading server keys: %w", err)
	}
	if len(sk) == 0 {
		return nil, errors.New("loading server keys: none in the store (run EnsureKey)")
	}
	keys := make([]noise.DHKey, 0, len(sk))
	for _, k := range sk {
		dk, err := channel.KeyFromPrivate(k.Private)
		if err != nil {
			return nil, fmt.Errorf("loading server keys: %w", err)
		}
		keys = append(keys, dk)
	}
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
