package server_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cardlink/internal/applet/wallet/wallettest"
	"cardlink/internal/channel"
	"cardlink/internal/device"
	"cardlink/internal/link/linktest"
	"cardlink/internal/protocol"
	"cardlink/internal/server"
	"cardlink/internal/server/auth"
	"cardlink/internal/server/servertest"
	"cardlink/internal/store"
	"cardlink/internal/txn"
)

func TestMain(m *testing.M) {
	auth.PINIterations = 1000 // records keep their count; only speed changes
	m.Run()
}

// testTimeout bounds every exchange a test starts, so that a hang fails
// the test instead of stalling it.
const testTimeout = 30 * time.Second

// bed is a running listener over a real SQLite store, a real auth service
// and a registered device, with a personalized card in a virtual reader.
type bed struct {
	st      store.Store
	svc     *auth.Service
	addr    string
	pubs    [][]byte // the server's static public keys
	card    *wallettest.Env
	id      device.Identity // the registered device
	cancel  context.CancelFunc
	stopped chan error

	mu   sync.Mutex
	last net.Conn // the last connection dial made
}

// newBed starts a listener on 127.0.0.1:0; it stops when the test ends and
// the test fails if Serve did not return nil.
func newBed(t testing.TB, st store.Store, cfg server.Config) *bed {
	t.Helper()
	ctx := context.Background()
	card := servertest.Card(t)
	svc, err := auth.New(auth.Config{Store: st, CA: card.CA, ServerBiometric: true})
	if err != nil {
		t.Fatal(err)
	}
	pubs, l := listen(t, st)
	b := &bed{st: st, svc: svc, pubs: pubs, card: card}
	b.id = b.addDevice(t)
	b.addr = l.Addr().String()
	cfg.Auth, cfg.Store = svc, st
	srv := server.New(cfg)
	sctx, cancel := context.WithCancel(ctx)
	b.cancel, b.stopped = cancel, make(chan error, 1)
	go func() { b.stopped <- srv.Serve(sctx, l) }()
	t.Cleanup(func() {
		b.stop(t)
	})
	return b
}

// stop cancels Serve and checks it returned nil; it is idempotent.
func (b *bed) stop(t testing.TB) {
	t.Helper()
	b.cancel()
	if err, ok := <-b.stopped; ok {
		close(b.stopped)
		if err != nil {
			t.Errorf("Serve() = %v, want nil after cancel", err)
		}
	}
}

// addInstance starts a second server instance (its own auth service and
// listener) over st, another store on the bed's database, and returns its
// address. It stops when the test ends.
func (b *bed) addInstance(t testing.TB, st store.Store) string {
	t.Helper()
	svc, err := auth.New(auth.Config{Store: st, CA: b.card.CA, ServerBiometric: true})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- server.New(server.Config{Auth: svc, Store: st}).Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve() = %v, want nil after cancel", err)
		}
	})
	return l.Addr().String()
}

// backend is a database the end-to-end tests run on; open opens one more
// store on it (one per server instance).
type backend struct {
	name string
	open func(t testing.TB) store.Store
}

// backends are SQLite (a file in a temporary directory) and, when
// CARDLINK_TEST_POSTGRES is set, PostgreSQL.
func backends() []backend {
	return []backend{
		{"sqlite", func(t testing.TB) store.Store {
			t.Helper()
			path := filepath.Join(sharedDir(t), "cardlink.db")
			st, err := store.Open(context.Background(), "sqlite:"+path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			return st
		}},
		{"postgres", func(t testing.TB) store.Store {
			t.Helper()
			dsn := os.Getenv(envPostgres)
			if dsn == "" {
				t.Skipf("set %s to a PostgreSQL URI (postgres://…) to run", envPostgres)
			}
			st, err := store.Open(context.Background(), dsn)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			return st
		}},
	}
}

var (
	sharedMu   sync.Mutex
	sharedDirs = map[testing.TB]string{}
)

// sharedDir is one temporary directory per test, so that every store a
// test opens is on the same SQLite file.
func sharedDir(t testing.TB) string {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	d, ok := sharedDirs[t]
	if !ok {
		d = t.TempDir()
		sharedDirs[t] = d
		t.Cleanup(func() {
			sharedMu.Lock()
			delete(sharedDirs, t)
			sharedMu.Unlock()
		})
	}
	return d
}

// listen makes sure st has a server key and opens a loopback listener
// for a server on it (Serve closes it); it returns the server's public
// keys, newest first, and the listener.
func listen(t testing.TB, st store.Store) ([][]byte, net.Listener) {
	t.Helper()
	pubs, err := server.EnsureKey(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return pubs, l
}

// addDevice registers a new device with the store and returns its identity.
func (b *bed) addDevice(t testing.TB) device.Identity {
	t.Helper()
	return servertest.Device(t, b.st, "test", b.pubs, b.addr, time.Now())
}

// dial opens a TCP connection to the listener, closed when the test ends.
func (b *bed) dial(t testing.TB) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", b.addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(testTimeout))
	t.Cleanup(func() { c.Close() })
	b.mu.Lock()
	b.last = c
	b.mu.Unlock()
	return c
}

// authenticate runs device.Authenticate with the bed's card over a new
// connection.
func (b *bed) authenticate(t testing.TB, id device.Identity, opts device.AuthOptions) (device.Result, error) {
	t.Helper()
	return b.authenticateAt(t, b.addr, id, opts)
}

// authenticateAt is authenticate with the server instance at addr.
func (b *bed) authenticateAt(t testing.TB, addr string, id device.Identity, opts device.AuthOptions) (device.Result, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	return device.Authenticate(ctx, c, id, b.card.Client, opts)
}

// TestAuthenticate runs authentications end to end, through two server
// instances on one database in turn: the card's certificate, counter and
// online PIN tries are shared state.
func TestAuthenticate(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) { testAuthenticate(t, be) })
	}
}

func testAuthenticate(t *testing.T, be backend) {
	b := newBed(t, be.open(t), server.Config{})
	addrs := []string{b.addr, b.addInstance(t, be.open(t))}
	ctx := context.Background()
	// The server does not know the card yet: the device sends its
	// certificate when asked.
	if _, err := b.st.Card(ctx, b.card.CardNumber); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Card() before first use = %v, want ErrNotFound", err)
	}
	first, err := b.authenticate(t, b.id, device.AuthOptions{PIN: wallettest.PIN})
	if err != nil || !first.OK() {
		t.Fatalf("first Authenticate() = %+v, %v; want success", first, err)
	}
	b.setPIN(t, "4321")
	b.setBiometric(t, wallettest.Template())
	other := wallettest.Sample(wallettest.Template(), 200) // far past the threshold
	// Run in order on one card: the counter grows with each signature.
	tests := []struct {
		name      string
		opts      device.AuthOptions
		code      protocol.Code
		cvm       txn.CVM
		triesLeft int
	}{
		{"offline PIN", device.AuthOptions{PIN: wallettest.PIN}, protocol.CodeOK, txn.CVMOfflinePIN, 0},
		{"biometric", device.AuthOptions{Biometric: wallettest.Sample(wallettest.Template(), 3)}, protocol.CodeOK, txn.CVMBiometric, 0},
		{"online PIN", device.AuthOptions{OnlinePIN: "4321"}, protocol.CodeOK, txn.CVMOnlinePIN, 0},
		{"wrong online PIN", device.AuthOptions{OnlinePIN: "0000"}, protocol.CodePINIncorrect, 0, 2},
		{"online PIN after a wrong one", device.AuthOptions{OnlinePIN: "4321"}, protocol.CodeOK, txn.CVMOnlinePIN, 0},
		{"server-matched biometric", device.AuthOptions{ServerBiometric: wallettest.Sample(wallettest.Template(), 5)}, protocol.CodeOK, txn.CVMBiometric, 0},
		{"server-matched biometric, another finger", device.AuthOptions{ServerBiometric: other}, protocol.CodeBiometricMismatch, 0, 4},
		{"no holder verification", device.AuthOptions{}, protocol.CodeCVMNotAccepted, 0, 0},
	}
	counter := first.Counter
	for i, tt := range tests {
		res, err := b.authenticateAt(t, addrs[(i+1)%len(addrs)], b.id, tt.opts)
		if err != nil {
			t.Fatalf("%s: Authenticate() error = %v", tt.name, err)
		}
		if res.Code != tt.code || res.CVM != tt.cvm || res.TriesLeft != tt.triesLeft {
			t.Errorf("%s: Authenticate() = code %v, cvm %v, tries %d; want %v, %v, %d",
				tt.name, res.Code, res.CVM, res.TriesLeft, tt.code, tt.cvm, tt.triesLeft)
		}
		if res.CardNumber != b.card.CardNumber {
			t.Errorf("%s: Authenticate().CardNumber = %s, want %s", tt.name, res.CardNumber, b.card.CardNumber)
		}
		if tt.code == protocol.CodeCVMNotAccepted {
			// The device sees the challenge's methods and does not have
			// the card sign in vain.
			if res.Counter != 0 {
				t.Errorf("%s: Authenticate().Counter = %d, want 0 (no signature)", tt.name, res.Counter)
			}
			continue
		}
		if res.Counter <= counter {
			t.Errorf("%s: Authenticate().Counter = %d, want > %d", tt.name, res.Counter, counter)
		}
		counter = res.Counter
	}
	c, err := b.st.Card(ctx, b.card.CardNumber)
	if err != nil {
		t.Fatalf("the card was not stored on first use: %v", err)
	}
	// The last accepted counter is the last signature's.
	if c.Counter != counter {
		t.Errorf("stored counter = %d, want %d", c.Counter, counter)
	}
}

// setBiometric enrols template for the bed's card for server-side
// matching (threshold and tries at their defaults); the card must be known.
func (b *bed) setBiometric(t *testing.T, template []byte) {
	t.Helper()
	bio, err := auth.NewBiometric(b.card.CardNumber, template, auth.DefaultBiometricThreshold, 5)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.st.SetBiometric(context.Background(), bio); err != nil {
		t.Fatal(err)
	}
}

// setPIN gives the bed's card an online PIN; the card must be known.
func (b *bed) setPIN(t *testing.T, pin string) {
	t.Helper()
	p, err := auth.NewPIN(b.card.CardNumber, pin, 3)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.st.SetPIN(context.Background(), p); err != nil {
		t.Fatal(err)
	}
}

func TestDeviceRefused(t *testing.T) {
	b := newBed(t, servertest.SQLite(t), server.Config{})
	other, err := channel.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	wrongPin := b.id
	wrongPin.ServerKeys = [][]byte{other.Public}
	unknown := b.id
	unknown.Static = other
	revoked := b.addDevice(t)
	if err := b.st.RevokeDevice(context.Background(), revoked.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		id   device.Identity
	}{
		{"wrong pinned server key", wrongPin},
		{"unregistered device", unknown},
		{"revoked device", revoked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, _ := b.card.Client.Counter(context.Background())
			_, err := b.authenticate(t, tt.id, device.AuthOptions{})
			if !errors.Is(err, device.ErrServerRefused) || !errors.Is(err, channel.ErrHandshake) {
				t.Fatalf("Authenticate() error = %v, want ErrServerRefused and channel.ErrHandshake", err)
			}
			after, _ := b.card.Client.Counter(context.Background())
			if after != before {
				t.Errorf("card counter went from %d to %d; the card must not sign for a refused channel", before, after)
			}
		})
	}
	// The listener still serves the registered device.
	if res, err := b.authenticate(t, b.id, device.AuthOptions{PIN: wallettest.PIN}); err != nil || !res.OK() {
		t.Fatalf("Authenticate() after refusals = %+v, %v; want success", res, err)
	}
}

// rawSession opens a channel as the bed's device, to send arbitrary
// messages.
func (b *bed) rawSession(t testing.TB) *channel.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c, err := channel.Dial(ctx, b.dial(t), channel.Config{Static: b.id.Static, ServerPub: b.pubs[0]})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func readError(t *testing.T, c *channel.Conn) *protocol.Error {
	t.Helper()
	raw, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("ReadMessage() error = %v, want a protocol Error", err)
	}
	m, err := protocol.Decode(raw)
	if err != nil {
		t.Fatalf("Decode(reply) error = %v", err)
	}
	e, ok := m.(*protocol.Error)
	if !ok {
		t.Fatalf("reply = %T, want *protocol.Error", m)
	}
	return e
}

func encode(t testing.TB, m protocol.Message) []byte {
	t.Helper()
	b, err := protocol.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBadMessages(t *testing.T) {
	b := newBed(t, servertest.SQLite(t), server.Config{})
	hello := encode(t, &protocol.Hello{Software: "test"})
	tests := []struct {
		name   string
		msg    []byte
		code   protocol.Code
		closed bool // the server hangs up after answering
	}{
		{"empty", []byte{}, protocol.CodeMalformed, true},
		{"truncated header", []byte{protocol.Version}, protocol.CodeMalformed, true},
		{"unknown version", append([]byte{protocol.Version + 1}, hello[1:]...), protocol.CodeUnsupportedVersion, true},
		{"unknown type", []byte{protocol.Version, 0xEE, 0xA0}, protocol.CodeUnexpectedMessage, true},
		{"truncated body", hello[:len(hello)-1], protocol.CodeMalformed, true},
		{"not deterministic", []byte{protocol.Version, byte(protocol.TypeHello), 0xB8, 0x00}, protocol.CodeMalformed, true},
		{"over MaxSize", make([]byte, protocol.MaxSize+1), protocol.CodeTooLarge, true},
		{"server's message from a device", encode(t, &protocol.AuthResult{Code: protocol.CodeOK}), protocol.CodeUnexpectedMessage, false},
		{"offer request without a purchase service", encode(t, &protocol.OfferRequest{CardNumber: "4111111111111111", CertID: make([]byte, 8)}), protocol.CodeUnexpectedMessage, false},
		{"approval without a purchase service", encode(t, &protocol.TransactionApproval{ID: make([]byte, 16), Counter: 1, Signature: make([]byte, 70)}), protocol.CodeUnexpectedMessage, false},
		{"answer to no challenge", encode(t, &protocol.AuthResponse{Challenge: make([]byte, 32), Counter: 1, Signature: make([]byte, 70)}), 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := b.rawSession(t)
			if err := c.WriteMessage(tt.msg); err != nil {
				t.Fatal(err)
			}
			if tt.code == 0 { // an AuthResult refusal, not an Error
				raw, err := c.ReadMessage()
				if err != nil {
					t.Fatal(err)
				}
				m, err := protocol.Decode(raw)
				if r, ok := m.(*protocol.AuthResult); err != nil || !ok || r.Code != protocol.CodeChallengeUnknown {
					t.Fatalf("reply = %#v, %v; want AuthResult{CodeChallengeUnknown}", m, err)
				}
			} else if e := readError(t, c); e.Code != tt.code {
				t.Fatalf("reply = %v, want code %v", e, tt.code)
			}
			// Either the server hangs up, or it still answers.
			if err := c.WriteMessage(encode(t, &protocol.AuthResult{})); err != nil && !tt.closed {
				t.Fatal(err)
			}
			_, err := c.ReadMessage()
			if tt.closed && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !isReset(err) {
				t.Errorf("after a bad message, ReadMessage() = %v, want the link closed", err)
			}
			if !tt.closed && err != nil {
				t.Errorf("after a refused message, ReadMessage() = %v, want the connection kept", err)
			}
		})
	}
	if res, err := b.authenticate(t, b.id, device.AuthOptions{PIN: wallettest.PIN}); err != nil || !res.OK() {
		t.Fatalf("Authenticate() after bad messages = %+v, %v; want success", res, err)
	}
}

func isReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne)
}

// TestBadFrames sends bytes that are not a channel at all; the server
// drops each connection and keeps serving.
func TestBadFrames(t *testing.T) {
	b := newBed(t, servertest.SQLite(t), server.Config{})
	tests := []struct {
		name  string
		bytes []byte
	}{
		{"nothing", nil},
		{"garbage handshake", append([]byte{0, 96}, make([]byte, 96)...)},
		{"oversized frame", []byte{0xFF, 0xFF, 1, 2, 3}},
		{"truncated frame", []byte{0, 96, 1, 2, 3}},
		{"short handshake", append([]byte{0, 10}, make([]byte, 10)...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := b.dial(t)
			if _, err := c.Write(tt.bytes); err != nil {
				t.Fatal(err)
			}
			if tc, ok := c.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
			n, err := io.Copy(io.Discard, c)
			if err != nil && !isReset(err) {
				t.Fatalf("reading after %s: %v", tt.name, err)
			}
			if n != 0 {
				t.Errorf("server sent %d bytes after %s, want none", n, tt.name)
			}
		})
	}
	if res, err := b.authenticate(t, b.id, device.AuthOptions{PIN: wallettest.PIN}); err != nil || !res.OK() {
		t.Fatalf("Authenticate() after bad frames = %+v, %v; want success", res, err)
	}
}

// countingConn counts the bytes each way.
type countingConn struct {
	net.Conn
	up, down atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.down.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.up.Add(int64(n))
	return n, err
}

// TestWireBytes measures one authentication on the wire, handshake
// included, once the server knows the card: the budget is 600
// bytes both ways.
func TestWireBytes(t *testing.T) {
	b := newBed(t, servertest.SQLite(t), server.Config{})
	ctx := context.Background()
	const budget = 600
	tests := []struct {
		name string
		opts device.AuthOptions
		max  int64
	}{
		{"first use, certificate sent", device.AuthOptions{PIN: wallettest.PIN}, 0},
		{"offline PIN", device.AuthOptions{PIN: wallettest.PIN}, budget},
		{"set online PIN", device.AuthOptions{}, -1},
		{"online PIN", device.AuthOptions{OnlinePIN: "4321"}, budget},
	}
	for _, tt := range tests {
		if tt.max < 0 {
			b.setPIN(t, "4321")
			continue
		}
		cc := &countingConn{Conn: b.dial(t)}
		cctx, cancel := context.WithTimeout(ctx, testTimeout)
		res, err := device.Authenticate(cctx, cc, b.id, b.card.Client, tt.opts)
		cancel()
		if err != nil || !res.OK() {
			t.Fatalf("%s: Authenticate() = %+v, %v", tt.name, res, err)
		}
		total := cc.up.Load() + cc.down.Load()
		t.Logf("%s: %d bytes (%d up, %d down), %v at 1200 bit/s", tt.name, total, cc.up.Load(), cc.down.Load(),
			linktest.Config{BitsPerSecond: 1200}.Airtime(total))
		if tt.max > 0 && total > tt.max {
			t.Errorf("%s: %d bytes on the wire, want at most %d", tt.name, total, tt.max)
		}
	}
}

// TestShutdown stops the server while a device is connected and silent:
// Serve must return, closing the connection.
func TestShutdown(t *testing.T) {
	b := newBed(t, servertest.SQLite(t), server.Config{})
	c := b.rawSession(t)
	if err := c.WriteMessage(encode(t, &protocol.Hello{Software: "test"})); err != nil {
		t.Fatal(err)
	}
	b.stop(t)
	if _, err := c.ReadMessage(); err == nil {
		t.Fatal("ReadMessage() after shutdown = nil error, want the link closed")
	}
	if _, err := net.DialTimeout("tcp", b.addr, testTimeout); err == nil {
		t.Error("Dial() after shutdown succeeded, want the listener closed")
	}
}

// TestMaxConns holds the only connection slot with a silent device: a
// second device is not served (its attempt runs out of time), and is
// served once the first leaves.
func TestMaxConns(t *testing.T) {
	b := newBed(t, servertest.SQLite(t), server.Config{MaxConns: 1})
	first := b.rawSession(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	second := b.dial(t)
	res, err := device.Authenticate(ctx, second, b.id, b.card.Client, device.AuthOptions{PIN: wallettest.PIN})
	cancel()
	second.Close() // the caller closes the link; else it would hold the slot next
	if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, device.ErrServerRefused) {
		t.Fatalf("Authenticate() while the only slot is taken = %+v, %v; want the deadline exceeded", res, err)
	}
	first.Close()
	if res, err := b.authenticate(t, b.id, device.AuthOptions{PIN: wallettest.PIN}); err != nil || !res.OK() {
		t.Fatalf("Authenticate() after the first device left = %+v, %v; want success", res, err)
	}
}

func TestEnsureKey(t *testing.T) {
	st := servertest.SQLite(t)
	ctx := context.Background()
	first, err := server.EnsureKey(ctx, st)
	if err != nil || len(first) != 1 || len(first[0]) != channel.KeyLen {
		t.Fatalf("EnsureKey() on an empty store = %x, %v; want one new key", first, err)
	}
	again, err := server.EnsureKey(ctx, st)
	if err != nil || len(again) != 1 || string(again[0]) != string(first[0]) {
		t.Fatalf("EnsureKey() again = %x, %v; want the same key %x", again, err, first)
	}
}

// gatedStore holds AdvanceCounter, which Verify calls, until released.
type gatedStore struct {
	store.Store
	entered chan struct{}
	release chan struct{}
}

func (g *gatedStore) AdvanceCounter(ctx context.Context, number string, counter uint32, now time.Time) error {
	g.entered <- struct{}{}
	<-g.release
	return g.Store.AdvanceCounter(ctx, number, counter, now)
}

// TestShutdownFinishesAnswer stops the server while it verifies a
// device's answer: the device still gets its result, then Serve returns.
func TestShutdownFinishesAnswer(t *testing.T) {
	g := &gatedStore{Store: servertest.SQLite(t), entered: make(chan struct{}), release: make(chan struct{})}
	b := newBed(t, g, server.Config{})
	type outcome struct {
		res device.Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := b.authenticate(t, b.id, device.AuthOptions{PIN: wallettest.PIN})
		done <- outcome{res, err}
	}()
	<-g.entered // the server is verifying
	b.cancel()
	close(g.release)
	o := <-done
	if o.err != nil || !o.res.OK() {
		t.Fatalf("Authenticate() across shutdown = %+v, %v; want success", o.res, o.err)
	}
	b.stop(t)
}
