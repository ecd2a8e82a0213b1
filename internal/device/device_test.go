package device

import (
	"bytes"
	"context"
	"errors"
	"io"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flynn/noise"

	"cardlink/internal/applet/wallet/wallettest"
	"cardlink/internal/channel"
	"cardlink/internal/link"
	"cardlink/internal/link/linktest"
	"cardlink/internal/protocol"
	"cardlink/internal/txn"
)

// fakeServer is a scripted server: after the handshake it reads each
// message the device sends and answers the ChallengeRequests and
// AuthResponses with the next of replies, in order (nil: hang up).
type fakeServer struct {
	replies []protocol.Message
	first   protocol.Message // if set, sent just before the first reply
	got     []protocol.Type  // what the device sent, in order
}

// serve runs the script on one end of an in-memory pipe and returns the
// device's end and the script's result.
func (s *fakeServer) serve(t *testing.T, key noise.DHKey) (*linktest.End, <-chan error) {
	t.Helper()
	dev, srv := linktest.Pipe(linktest.Config{})
	done := make(chan error, 1)
	go func() {
		defer srv.Close()
		done <- s.run(srv, key)
	}()
	t.Cleanup(func() { dev.Close() })
	return dev, done
}

func (s *fakeServer) run(srv *linktest.End, key noise.DHKey) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := channel.Accept(ctx, srv, channel.ServerConfig{Keys: []noise.DHKey{key}, Authorize: func([]byte) error { return nil }})
	if err != nil {
		return err
	}
	for _, r := range s.replies {
		var m protocol.Message
		for m == nil || m.Type() == protocol.TypeHello {
			b, err := c.ReadMessage()
			if err != nil {
				return err
			}
			if m, err = protocol.Decode(b); err != nil {
				return err
			}
			s.got = append(s.got, m.Type())
		}
		if r == nil {
			return nil
		}
		if s.first != nil {
			out, err := protocol.Encode(s.first)
			if err != nil {
				return err
			}
			if err := c.WriteMessage(out); err != nil {
				return err
			}
			s.first = nil
		}
		out, err := protocol.Encode(r)
		if err != nil {
			return err
		}
		if err := c.WriteMessage(out); err != nil {
			return err
		}
	}
	return nil
}

func TestAuthenticateAgainstScript(t *testing.T) {
	challenge := &protocol.Challenge{Challenge: make([]byte, protocol.ChallengeLen), TTL: 60, Context: []byte("ctx"), CVMs: 2}
	ok := &protocol.AuthResult{Code: protocol.CodeOK, CVM: 1}
	needCert := &protocol.Error{Code: protocol.CodeCertificateNeeded}
	tests := []struct {
		name    string
		replies []protocol.Message
		check   func(t *testing.T, res Result, err error)
		sent    []protocol.Type
	}{
		{
			name:    "success",
			replies: []protocol.Message{challenge, ok},
			check: func(t *testing.T, res Result, err error) {
				if err != nil || !res.OK() || res.CVM != 1 || res.Counter != 1 {
					t.Fatalf("Authenticate() = %+v, %v; want OK, offline PIN, counter 1", res, err)
				}
			},
			sent: []protocol.Type{protocol.TypeHello, protocol.TypeChallengeRequest, protocol.TypeAuthResponse},
		},
		{
			name:    "certificate asked for once",
			replies: []protocol.Message{needCert, challenge, ok},
			check: func(t *testing.T, res Result, err error) {
				if err != nil || !res.OK() {
					t.Fatalf("Authenticate() = %+v, %v; want OK", res, err)
				}
			},
			sent: []protocol.Type{protocol.TypeHello, protocol.TypeChallengeRequest, protocol.TypeChallengeRequest, protocol.TypeAuthResponse},
		},
		{
			name:    "method not accepted",
			replies: []protocol.Message{&protocol.Challenge{Challenge: make([]byte, protocol.ChallengeLen), TTL: 60, CVMs: protocol.CVMs(txn.CVMOnlinePIN)}, nil},
			check: func(t *testing.T, res Result, err error) {
				if err != nil || res.Code != protocol.CodeCVMNotAccepted || res.Counter != 0 {
					t.Fatalf("Authenticate() = %+v, %v; want CodeCVMNotAccepted without a signature", res, err)
				}
			},
			sent: []protocol.Type{protocol.TypeHello, protocol.TypeChallengeRequest, protocol.TypeError},
		},
		{
			name:    "certificate asked for twice",
			replies: []protocol.Message{needCert, needCert},
			check:   wantCode(protocol.CodeCertificateNeeded),
		},
		{
			name:    "refused",
			replies: []protocol.Message{&protocol.Error{Code: protocol.CodeCardRevoked}},
			check:   wantCode(protocol.CodeCardRevoked),
		},
		{
			name:    "result instead of a challenge",
			replies: []protocol.Message{ok},
			check:   wantErr("instead of a Challenge"),
		},
		{
			name:    "challenge instead of a result",
			replies: []protocol.Message{challenge, challenge},
			check:   wantErr("instead of an AuthResult"),
		},
		{
			name:    "hang up",
			replies: []protocol.Message{challenge, nil},
			check: func(t *testing.T, res Result, err error) {
				if !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("Authenticate() error = %v, want io.ErrUnexpectedEOF", err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			card := wallettest.New(t, wallettest.Options{})
			key, err := channel.GenerateKey(nil)
			if err != nil {
				t.Fatal(err)
			}
			id := newIdentity(t)
			id.ServerKeys = [][]byte{key.Public}
			s := &fakeServer{replies: tt.replies}
			l, done := s.serve(t, key)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			res, err := Authenticate(ctx, l, id, card.Client, AuthOptions{PIN: card.PIN})
			l.Close()
			if serr := <-done; serr != nil && !errors.Is(serr, io.EOF) && !errors.Is(serr, io.ErrUnexpectedEOF) && !errors.Is(serr, channel.ErrClosed) {
				t.Errorf("fake server: %v", serr)
			}
			tt.check(t, res, err)
			// A refused exchange leaves no verified holder on the card,
			// and no signature.
			if counter, _ := card.Client.Counter(ctx); counter != res.Counter {
				t.Errorf("card counter = %d, want %d", counter, res.Counter)
			}
			if st, err := card.Client.PINStatus(ctx); err != nil || (res.Counter == 0 && st.Verified) {
				t.Errorf("PINStatus() after the exchange = %+v, %v; want not verified", st, err)
			}
			if tt.sent != nil && !slices.Equal(s.got, tt.sent) {
				t.Errorf("device sent %v, want %v", s.got, tt.sent)
			}
		})
	}
}

func wantCode(code protocol.Code) func(*testing.T, Result, error) {
	return func(t *testing.T, res Result, err error) {
		t.Helper()
		var perr *protocol.Error
		if !errors.As(err, &perr) || perr.Code != code {
			t.Fatalf("Authenticate() error = %v, want a protocol error %v", err, code)
		}
	}
}

func wantErr(text string) func(*testing.T, Result, error) {
	return func(t *testing.T, res Result, err error) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), text) {
			t.Fatalf("Authenticate() error = %v, want one saying %q", err, text)
		}
	}
}

func TestAuthenticateRefusesOptions(t *testing.T) {
	card := wallettest.New(t, wallettest.Options{})
	id := newIdentity(t)
	dev, _ := linktest.Pipe(linktest.Config{})
	defer dev.Close()
	tests := []struct {
		name string
		id   Identity
		opts AuthOptions
	}{
		{"two methods", id, AuthOptions{PIN: "1234", OnlinePIN: "1234"}},
		{"PIN and biometric", id, AuthOptions{PIN: "1234", Biometric: wallettest.Template()}},
		{"no pinned key", Identity{Static: id.Static}, AuthOptions{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, _ := card.Client.Counter(context.Background())
			if _, err := Authenticate(context.Background(), dev, tt.id, card.Client, tt.opts); err == nil {
				t.Fatalf("Authenticate(%s) = nil error, want one", tt.name)
			}
			if after, _ := card.Client.Counter(context.Background()); after != before {
				t.Errorf("card counter went from %d to %d, want untouched", before, after)
			}
		})
	}
}

// TestAuthenticateServerKeys sends the device a ServerKeys update, as a
// server does during a key rotation: the device pins it when it is the
// server's first message and holds the key the device used, and refuses
// it otherwise, keeping what it pinned.
func TestAuthenticateServerKeys(t *testing.T) {
	challenge := &protocol.Challenge{Challenge: make([]byte, protocol.ChallengeLen), TTL: 60, CVMs: 2}
	ok := &protocol.AuthResult{Code: protocol.CodeOK, CVM: 1}
	key, err := channel.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	newer, err := channel.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	rotated := [][]byte{newer.Public, key.Public}
	tests := []struct {
		name     string
		first    protocol.Message
		replies  []protocol.Message
		noMemory bool
		wantErr  string   // "" for success
		wantKeys [][]byte // pinned afterwards
		reported [][]byte // Result.ServerKeys
	}{
		{"no update", nil, []protocol.Message{challenge, ok}, false, "", [][]byte{key.Public}, nil},
		{"update pinned", &protocol.ServerKeys{Keys: rotated}, []protocol.Message{challenge, ok}, false, "", rotated, rotated},
		{"update before a refusal", &protocol.ServerKeys{Keys: rotated}, []protocol.Message{&protocol.Error{Code: protocol.CodeCardRevoked}}, false, "card revoked", rotated, rotated},
		{"update without memory", &protocol.ServerKeys{Keys: rotated}, []protocol.Message{challenge, ok}, true, "", [][]byte{key.Public}, rotated},
		{"update without the key used", &protocol.ServerKeys{Keys: [][]byte{newer.Public}}, []protocol.Message{challenge, ok}, false, "leaves out the key the device used", [][]byte{key.Public}, nil},
		{"update after the first message", nil, []protocol.Message{challenge, &protocol.ServerKeys{Keys: rotated}}, false, "ServerKeys after the server's first message", [][]byte{key.Public}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			card := wallettest.New(t, wallettest.Options{})
			id := newIdentity(t)
			id.ServerKeys = [][]byte{key.Public}
			mem, err := CreateMemory(filepath.Join(t.TempDir(), "device.nvm"))
			if err != nil {
				t.Fatal(err)
			}
			defer mem.Close()
			if err := mem.SetIdentity(id); err != nil {
				t.Fatal(err)
			}
			opts := AuthOptions{PIN: card.PIN, Memory: mem}
			if tt.noMemory {
				opts.Memory = nil
			}
			s := &fakeServer{replies: tt.replies, first: tt.first}
			l, done := s.serve(t, key)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			res, err := Authenticate(ctx, l, id, card.Client, opts)
			l.Close()
			<-done
			switch {
			case tt.wantErr == "" && (err != nil || !res.OK()):
				t.Fatalf("Authenticate() = %+v, %v; want success", res, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Authenticate() error = %v, want one saying %q", err, tt.wantErr)
			}
			if !bytes.Equal(res.ServerKey, key.Public) {
				t.Errorf("Authenticate().ServerKey = %x, want %x", res.ServerKey, key.Public)
			}
			if !reflect.DeepEqual(res.ServerKeys, tt.reported) {
				t.Errorf("Authenticate().ServerKeys = %x, want %x", res.ServerKeys, tt.reported)
			}
			got, err := mem.Identity()
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.ServerKeys, tt.wantKeys) {
				t.Errorf("pinned server keys afterwards = %x, want %x", got.ServerKeys, tt.wantKeys)
			}
			if got.ID != id.ID || got.Server != id.Server || !bytes.Equal(got.Static.Private, id.Static.Private) {
				t.Errorf("identity afterwards = %+v, want only the server keys changed from %+v", got, id)
			}
		})
	}
}

// TestAuthenticateFallback pins keys the server does not hold in front of
// one it does: the device tries each over a new link from Redial.
func TestAuthenticateFallback(t *testing.T) {
	keys := make([]noise.DHKey, 3)
	for i := range keys {
		k, err := channel.GenerateKey(nil)
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = k
	}
	challenge := &protocol.Challenge{Challenge: make([]byte, protocol.ChallengeLen), TTL: 60, CVMs: 2}
	ok := &protocol.AuthResult{Code: protocol.CodeOK, CVM: 1}
	redialErr := errors.New("no carrier")
	tests := []struct {
		name      string
		pinned    []noise.DHKey
		noRedial  bool
		redialErr error
		wantKey   []byte // nil: want ErrServerRefused
		wantText  string
		redials   int
	}{
		{"newest works", []noise.DHKey{keys[0], keys[1]}, false, nil, keys[0].Public, "", 0},
		{"second works", []noise.DHKey{keys[1], keys[0]}, false, nil, keys[0].Public, "", 1},
		{"third works", []noise.DHKey{keys[2], keys[1], keys[0]}, false, nil, keys[0].Public, "", 2},
		{"none works", []noise.DHKey{keys[2], keys[1]}, false, nil, nil, "(2 pinned keys tried)", 1},
		{"no redial", []noise.DHKey{keys[1], keys[0]}, true, nil, nil, "server refused", 0},
		{"redial fails", []noise.DHKey{keys[1], keys[0]}, false, redialErr, nil, "no carrier", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			card := wallettest.New(t, wallettest.Options{})
			id := newIdentity(t)
			id.ServerKeys = nil
			for _, k := range tt.pinned {
				id.ServerKeys = append(id.ServerKeys, k.Public)
			}
			var dones []<-chan error
			serve := func() *linktest.End {
				l, done := (&fakeServer{replies: []protocol.Message{challenge, ok}}).serve(t, keys[0])
				dones = append(dones, done)
				return l
			}
			opts := AuthOptions{PIN: card.PIN}
			redials := 0
			if !tt.noRedial {
				opts.Redial = func(context.Context) (link.Link, error) {
					redials++
					if tt.redialErr != nil {
						return nil, tt.redialErr
					}
					return serve(), nil
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			l := serve()
			res, err := Authenticate(ctx, l, id, card.Client, opts)
			l.Close()
			for _, d := range dones {
				<-d
			}
			if redials != tt.redials {
				t.Errorf("Redial called %d times, want %d", redials, tt.redials)
			}
			if tt.wantKey == nil {
				if !errors.Is(err, ErrServerRefused) || !errors.Is(err, channel.ErrHandshake) || !strings.Contains(err.Error(), tt.wantText) {
					t.Fatalf("Authenticate() = %+v, %v; want ErrServerRefused saying %q", res, err, tt.wantText)
				}
				if counter, _ := card.Client.Counter(ctx); counter != 0 {
					t.Errorf("card counter = %d after a refused channel, want 0", counter)
				}
				return
			}
			if err != nil || !res.OK() || !bytes.Equal(res.ServerKey, tt.wantKey) {
				t.Fatalf("Authenticate() = %+v, %v; want success with key %x", res, err, tt.wantKey)
			}
		})
	}
}
