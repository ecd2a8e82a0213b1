// Package channel is the device↔server secure channel: a Noise handshake
// and encrypted, length-framed messages over any ordered byte stream (a
// link.Link, a net.Conn, an in-memory pipe).
//
// # Handshake
//
// Noise_IK_25519_ChaChaPoly_SHA256 (github.com/flynn/noise) with the
// prologue "cardlink/1". The device is the initiator: it knows the server's
// static public key, pinned when it was provisioned, and sends its own
// static key encrypted in the first message. The server decrypts it, asks
// ServerConfig.Authorize whether that device is registered, and answers
// with the second message. A device pinned to another key than the
// server's fails the handshake (the server cannot open message 1, and no
// one without the pinned private key can produce a message 2 the device
// accepts); so does an unregistered device. On failure nothing is sent
// back: the server returns the error and its caller closes the link, so the
// device sees the link end (ErrHandshake wrapping io.EOF). Handshake
// messages carry no payload; a non-empty one is refused.
//
// Key rotation: the server holds several static keys (ServerConfig.Keys,
// newest first) and opens message 1 by trying each in turn. Trying costs
// one X25519 per key that does not fit and no byte on the wire, which
// beats a key-id byte for the handful of keys a rotation keeps alive.
// Conn.LocalStatic tells the server which key a device used, so that it
// can send a device on an older key the current ones (package server
// describes the rotation).
//
// # Framing
//
// Every handshake message and every transport message is one frame: a
// 2-byte big-endian length, then that many bytes, at most MaxFrame. A
// transport frame is the ChaCha20-Poly1305 ciphertext of one message (16
// bytes of tag on top), so a message holds at most MaxMessage bytes. The
// nonce is implicit (Noise counts messages), so frames are never reordered
// or dropped: the link below must be an ordered, reliable stream.
//
// Bytes on the wire (measured in TestHandshakeBytes): message 1 is 96
// bytes (ephemeral 32, encrypted static 32+16, empty payload's tag 16) and
// message 2 is 48 (ephemeral 32, tag 16): 148 bytes with framing. Each
// message after that costs its length plus 18.
//
// # Errors
//
// Errors wrap the sentinels below (errors.Is): ErrHandshake,
// ErrUnauthorized, ErrFrameTooLarge, ErrDecrypt, ErrClosed; a link that
// ends mid-frame gives io.ErrUnexpectedEOF, one that ends between frames
// io.EOF. Any read or write failure is final for that Conn: a frame over
// the limit or one that fails authentication also closes the link.
//
// It imports flynn/noise and the standard library; it knows nothing of the
// messages it carries (package protocol) nor of concrete links.
package channel

import (
	"context"
	"crypto/ecdh"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flynn/noise"
)

// Wire constants.
const (
	// Prologue is mixed into every handshake; both sides must agree.
	Prologue = "cardlink/1"
	// MaxFrame is the largest frame body, in bytes, after the 2-byte
	// length. A longer frame is refused with ErrFrameTooLarge.
	MaxFrame = 4096
	// MaxMessage is the largest message WriteMessage sends: MaxFrame less
	// the 16-byte authentication tag.
	MaxMessage = MaxFrame - tagLen
	// KeyLen is the size of static public and private keys.
	KeyLen = 32

	tagLen    = 16
	headerLen = 2
)

// Errors that callers branch on with errors.Is.
var (
	// ErrHandshake is any handshake failure: wrong pinned key, garbled or
	// truncated handshake message, link closed, deadline passed.
	ErrHandshake = errors.New("handshake failed")
	// ErrUnauthorized is returned by Accept when Authorize refused the
	// device's static key; it wraps Authorize's error too.
	ErrUnauthorized = errors.New("device not authorized")
	// ErrFrameTooLarge is a frame over MaxFrame (received), or a message
	// over MaxMessage (to send).
	ErrFrameTooLarge = errors.New("frame too large")
	// ErrDecrypt is a frame that fails authentication: garbled, replayed,
	// reordered or forged.
	ErrDecrypt = errors.New("message authentication failed")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("channel closed")
)

var suite = noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashSHA256)

// GenerateKey returns a new static key pair from rand (crypto/rand when
// nil), for provisioning a device or a server.
func GenerateKey(rand io.Reader) (noise.DHKey, error) {
	k, err := suite.GenerateKeypair(rand)
	if err != nil {
		return noise.DHKey{}, fmt.Errorf("generating key: %w", err)
	}
	return k, nil
}

// KeyFromPrivate rebuilds a static key pair from its 32-byte private half,
// as stored by a device or server.
func KeyFromPrivate(priv []byte) (noise.DHKey, error) {
	k, err := ecdh.X25519().NewPrivateKey(priv)
	if err != nil {
		return noise.DHKey{}, fmt.Errorf("loading key: %w", err)
	}
	return noise.DHKey{Private: slices.Clone(priv), Public: k.PublicKey().Bytes()}, nil
}

// Config is the device's side of the channel.
type Config struct {
	Static    noise.DHKey // the device's static key pair
	ServerPub []byte      // the server's static public key, pinned at provisioning
	Rand      io.Reader   // source of ephemeral keys; nil means crypto/rand
}

func (c *Config) validate() error {
	if err := validKey("device", c.Static); err != nil {
		return err
	}
	if len(c.ServerPub) != KeyLen {
		return fmt.Errorf("server public key of %d bytes, want %d", len(c.ServerPub), KeyLen)
	}
	return nil
}

// ServerConfig is the server's side of the channel.
type ServerConfig struct {
	// Keys are the server's static key pairs, newest first; keep an old key
	// here while devices pinned to it remain in service.
	Keys []noise.DHKey
	// Authorize is called with the device's static public key once message
	// 1 is open, before the server answers; a non-nil error refuses the
	// device (Accept returns ErrUnauthorized). It must not be nil.
	Authorize func(devicePub []byte) error
	// Rand is the source of ephemeral keys; nil means crypto/rand.
	Rand io.Reader
}

func (c *ServerConfig) validate() error {
	if len(c.Keys) == 0 {
		return errors.New("no server keys")
	}
	for i, k := range c.Keys {
		if err := validKey(fmt.Sprintf("server key %d", i), k); err != nil {
			return err
		}
	}
	if c.Authorize == nil {
		return errors.New("no Authorize function")
	}
	return nil
}

func validKey(name string, k noise.DHKey) error {
	if len(k.Private) != KeyLen || len(k.Public) != KeyLen {
		return fmt.Errorf("%s: key pair of %d+%d bytes, want %d+%d", name, len(k.Private), len(k.Public), KeyLen, KeyLen)
	}
	return nil
}

// Conn is an established channel. One goroutine may call ReadMessage while
// another calls WriteMessage; Close may be called from any goroutine and
// unblocks both if the link is an io.Closer.
type Conn struct {
	rw                io.ReadWriter
	hash, peer, local []byte // fixed by the handshake

	rmu  sync.Mutex // guards the read side
	recv *noise.CipherState
	rbuf []byte
	rerr error // sticky

	wmu  sync.Mutex // guards the write side
	send *noise.CipherState
	wbuf []byte
	werr error // sticky

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// Dial runs the device's side of the handshake over rw. ctx bounds the
// handshake: if rw has SetDeadline(time.Time) error its deadline follows
// ctx, else if rw is an io.Closer it is closed when ctx is done (otherwise
// ctx is checked only between messages); a deadline set this way is
// cleared when Dial returns. Errors wrap ErrHandshake, and the context's
// error when it ended the handshake.
func Dial(ctx context.Context, rw io.ReadWriter, cfg Config) (*Conn, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("dialing channel: %w", err)
	}
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:   suite,
		Random:        cfg.Rand,
		Pattern:       noise.HandshakeIK,
		Initiator:     true,
		Prologue:      []byte(Prologue),
		StaticKeypair: cfg.Static,
		PeerStatic:    cfg.ServerPub,
	})
	if err != nil {
		return nil, fmt.Errorf("dialing channel: %w", err)
	}
	done := watch(ctx, rw)
	var send, recv *noise.CipherState
	err = func() error {
		msg1, _, _, err := hs.WriteMessage(make([]byte, headerLen, 128), nil)
		if err != nil {
			return fmt.Errorf("writing message 1: %w", err)
		}
		if err := writeFrame(rw, msg1); err != nil {
			return fmt.Errorf("sending message 1: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		msg2, err := readFrame(rw, make([]byte, 0, 64))
		if err != nil {
			return fmt.Errorf("receiving message 2: %w", err)
		}
		payload, cs1, cs2, err := hs.ReadMessage(nil, msg2)
		if err != nil {
			return fmt.Errorf("opening message 2: %w", err)
		}
		if len(payload) != 0 {
			return fmt.Errorf("opening message 2: unexpected payload of %d bytes", len(payload))
		}
		send, recv = cs1, cs2
		return nil
	}()
	if err = done(err); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	return newConn(rw, send, recv, hs, cfg.Static.Public), nil
}

// Accept runs the server's side of the handshake over rw: it opens message
// 1 with the first of cfg.Keys that fits, asks cfg.Authorize about the
// device's static key, and answers. ctx bounds the handshake as in Dial.
// Errors wrap ErrHandshake, or ErrUnauthorized and Authorize's error; on
// error nothing was sent, and the caller should close rw.
func Accept(ctx context.Context, rw io.ReadWriter, cfg ServerConfig) (*Conn, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("accepting channel: %w", err)
	}
	done := watch(ctx, rw)
	var (
		hs         *noise.HandshakeState
		local      []byte
		send, recv *noise.CipherState
		refused    error
	)
	err := func() error {
		msg1, err := readFrame(rw, make([]byte, 0, 128))
		if err != nil {
			return fmt.Errorf("receiving message 1: %w", err)
		}
		var payload []byte
		hs, local, payload, err = openMessage1(&cfg, msg1)
		if err != nil {
			return err
		}
		if len(payload) != 0 {
			return fmt.Errorf("opening message 1: unexpected payload of %d bytes", len(payload))
		}
		if err := cfg.Authorize(slices.Clone(hs.PeerStatic())); err != nil {
			refused = err
			return nil
		}
		msg2, cs1, cs2, err := hs.WriteMessage(make([]byte, headerLen, 64), nil)
		if err != nil {
			return fmt.Errorf("writing message 2: %w", err)
		}
		if err := writeFrame(rw, msg2); err != nil {
			return fmt.Errorf("sending message 2: %w", err)
		}
		send, recv = cs2, cs1
		return nil
	}()
	err = done(err)
	switch {
	case refused != nil:
		return nil, fmt.Errorf("%w: %w", ErrUnauthorized, refused)
	case err != nil:
		return nil, fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	return newConn(rw, send, recv, hs, local), nil
}

// openMessage1 tries each server key on message 1 and returns the
// handshake state of the first that opens it.
func openMessage1(cfg *ServerConfig, msg1 []byte) (*noise.HandshakeState, []byte, []byte, error) {
	for _, k := range cfg.Keys {
		hs, err := noise.NewHandshakeState(noise.Config{
			CipherSuite:   suite,
			Random:        cfg.Rand,
			Pattern:       noise.HandshakeIK,
			Prologue:      []byte(Prologue),
			StaticKeypair: k,
		})
		if err != nil {
			return nil, nil, nil, fmt.Errorf("opening message 1: %w", err)
		}
		payload, _, _, err := hs.ReadMessage(nil, msg1)
		if err == nil {
			return hs, k.Public, payload, nil
		}
	}
	return nil, nil, nil, fmt.Errorf("opening message 1: no server key fits (%d tried)", len(cfg.Keys))
}

// deadliner is the optional ability of a link to bound blocking calls.
type deadliner interface {
	SetDeadline(time.Time) error
}

// watch makes ctx bound the blocking calls on rw until the returned
// function is called with the handshake's result; that function returns
// the result, joined with ctx's error when ctx has ended.
func watch(ctx context.Context, rw io.ReadWriter) func(error) error {
	if ctx.Done() == nil {
		return func(err error) error { return err }
	}
	var (
		mu       sync.Mutex
		finished bool // set when the handshake returned; interrupt must not act after it
	)
	guard := func(interrupt func()) func() {
		return func() {
			mu.Lock()
			defer mu.Unlock()
			if !finished {
				interrupt()
			}
		}
	}
	stop := func() bool { return true }
	d, hasDeadline := rw.(deadliner)
	switch {
	case hasDeadline:
		if t, ok := ctx.Deadline(); ok {
			d.SetDeadline(t)
		}
		stop = context.AfterFunc(ctx, guard(func() { d.SetDeadline(time.Unix(1, 0)) }))
	default:
		if c, ok := rw.(io.Closer); ok {
			stop = context.AfterFunc(ctx, guard(func() { c.Close() }))
		}
	}
	return func(err error) error {
		stop()
		mu.Lock()
		finished = true
		mu.Unlock()
		if hasDeadline {
			d.SetDeadline(time.Time{})
		}
		if err == nil {
			// ctx may have ended after the last byte; the handshake stands.
			return nil
		}
		if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
			return fmt.Errorf("%w (%w)", cerr, err)
		}
		return err
	}
}

func newConn(rw io.ReadWriter, send, recv *noise.CipherState, hs *noise.HandshakeState, local []byte) *Conn {
	return &Conn{
		rw:    rw,
		send:  send,
		recv:  recv,
		hash:  slices.Clone(hs.ChannelBinding()),
		peer:  slices.Clone(hs.PeerStatic()),
		local: slices.Clone(local),
	}
}

// HandshakeHash is the Noise handshake hash (32 bytes): unique to this
// session and known to both sides, for binding card signatures to it.
func (c *Conn) HandshakeHash() []byte { return slices.Clone(c.hash) }

// PeerStatic is the other side's static public key: on the server, the
// device's (already authorized); on the device, the pinned server key.
func (c *Conn) PeerStatic() []byte { return slices.Clone(c.peer) }

// LocalStatic is this side's static public key; on the server, the one of
// ServerConfig.Keys that the device is pinned to.
func (c *Conn) LocalStatic() []byte { return slices.Clone(c.local) }

// ReadMessage reads and decrypts the next message. It returns io.EOF when
// the link ended between messages, and errors wrapping
// io.ErrUnexpectedEOF (ended mid-frame), ErrFrameTooLarge or ErrDecrypt
// (the last two close the link). After any error every later call returns
// the same error. The returned slice is the caller's.
func (c *Conn) ReadMessage() ([]byte, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.closed.Load() {
		return nil, ErrClosed
	}
	if c.rerr != nil {
		return nil, c.rerr
	}
	if c.rbuf == nil {
		c.rbuf = make([]byte, 0, 256)
	}
	frame, err := readFrame(c.rw, c.rbuf)
	if err != nil {
		if errors.Is(err, ErrFrameTooLarge) {
			c.Close()
		}
		if err != io.EOF {
			err = fmt.Errorf("reading message: %w", err)
		}
		c.rerr = err
		return nil, err
	}
	c.rbuf = frame[:0]
	msg, err := c.recv.Decrypt(make([]byte, 0, max(len(frame)-tagLen, 0)), nil, frame)
	if err != nil {
		c.rerr = fmt.Errorf("reading message: %w", ErrDecrypt)
		c.Close()
		return nil, c.rerr
	}
	return msg, nil
}

// WriteMessage encrypts msg and writes it as one frame with one Write. A
// message over MaxMessage is refused with ErrFrameTooLarge (the Conn stays
// usable); after a failed write every later call fails.
func (c *Conn) WriteMessage(msg []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed.Load() {
		return ErrClosed
	}
	if c.werr != nil {
		return c.werr
	}
	if len(msg) > MaxMessage {
		return fmt.Errorf("writing message: %w: %d bytes, limit %d", ErrFrameTooLarge, len(msg), MaxMessage)
	}
	b, err := c.send.Encrypt(append(c.wbuf[:0], 0, 0), nil, msg)
	if err != nil {
		c.werr = fmt.Errorf("writing message: %w", err)
		return c.werr
	}
	c.wbuf = b[:0]
	if err := writeFrame(c.rw, b); err != nil {
		c.werr = fmt.Errorf("writing message: %w", err)
		return c.werr
	}
	return nil
}

// Close closes the link if it is an io.Closer; later reads and writes
// return ErrClosed. It is idempotent.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		if cl, ok := c.rw.(io.Closer); ok {
			c.closeErr = cl.Close()
		}
	})
	return c.closeErr
}

// writeFrame fills in the 2-byte length header that b starts with and
// writes b with one Write. len(b)-2 must not exceed MaxFrame.
func writeFrame(w io.Writer, b []byte) error {
	n := len(b) - headerLen
	if n < 0 || n > MaxFrame {
		panic("channel: frame body out of range")
	}
	binary.BigEndian.PutUint16(b, uint16(n))
	_, err := w.Write(b)
	return err
}

// readFrame reads one frame from r into buf (grown as needed) and returns
// its body. It returns io.EOF if r ended before the frame began,
// io.ErrUnexpectedEOF inside it, and ErrFrameTooLarge (reading nothing
// more) for a length over MaxFrame.
func readFrame(r io.Reader, buf []byte) ([]byte, error) {
	var h [headerLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(h[:]))
	if n > MaxFrame {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, n, MaxFrame)
	}
	buf = slices.Grow(buf[:0], n)[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return buf, nil
}
