package cli

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"cardlink/internal/store"
)

// keyStore is a store whose only abilities are the server keys; any other
// method panics. RetireServerKey answers retireErr without retiring.
type keyStore struct {
	store.Store // nil
	keys        []store.ServerKey
	retireErr   error
}

func (k *keyStore) ServerKeys(context.Context) ([]store.ServerKey, error) {
	var cur []store.ServerKey
	for _, sk := range k.keys {
		if sk.RetiredAt.IsZero() {
			cur = append(cur, sk)
		}
	}
	return cur, nil
}

func (k *keyStore) ServerKeyHistory(context.Context) ([]store.ServerKey, error) {
	return k.keys, nil
}

func (k *keyStore) RetireServerKey(context.Context, []byte, time.Time) error { return k.retireErr }

func (k *keyStore) Close() error { return nil }

var (
	keyStoresOnce sync.Once
	keyStores     sync.Map // test name → *keyStore
)

// registerKeyStore makes st the store that the URI it returns opens, for
// this test (also when tests run more than once: -count).
func registerKeyStore(t *testing.T, st *keyStore) string {
	keyStoresOnce.Do(func() {
		store.Register("keytest", func(_ context.Context, uri string) (store.Store, error) {
			st, ok := keyStores.Load(strings.TrimPrefix(uri, "keytest:"))
			if !ok {
				return nil, fmt.Errorf("no key store for %s", uri)
			}
			return st.(*keyStore), nil
		})
	})
	keyStores.Store(t.Name(), st)
	return "keytest:" + t.Name()
}

func serverKeyFake(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

// TestServerKeyList lists current and retired keys: each line says when
// the key was added and, for a retired one, retired.
func TestServerKeyList(t *testing.T) {
	day := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	b64 := func(b byte) string { return base64.StdEncoding.EncodeToString(serverKeyFake(b)) }
	tests := []struct {
		name       string
		keys       []store.ServerKey
		wantCode   int
		wantStdout []string
		wantStderr string // substring
	}{
		{
			name: "current and retired",
			keys: []store.ServerKey{
				{Public: serverKeyFake(3), Created: day.Add(48 * time.Hour)},
				{Public: serverKeyFake(2), Created: day.Add(24 * time.Hour)},
				{Public: serverKeyFake(1), Created: day, RetiredAt: day.Add(72 * time.Hour)},
			},
			wantStdout: []string{
				b64(3) + "  newest   added 2026-11-30T12:00:00Z",
				b64(2) + "  current  added 2026-11-29T12:00:00Z",
				b64(1) + "  retired  added 2026-11-28T12:00:00Z  retired 2026-12-01T12:00:00Z",
			},
		},
		{
			name: "newest key retired",
			keys: []store.ServerKey{
				{Public: serverKeyFake(2), Created: day.Add(24 * time.Hour), RetiredAt: day.Add(25 * time.Hour).In(time.FixedZone("UTC+3", 3*3600))},
				{Public: serverKeyFake(1), Created: day},
			},
			wantStdout: []string{
				b64(2) + "  retired  added 2026-11-29T12:00:00Z  retired 2026-11-29T13:00:00Z",
				b64(1) + "  newest   added 2026-11-28T12:00:00Z",
			},
		},
		{
			name:       "no key",
			wantCode:   1,
			wantStderr: "cardlink: the store holds no server key\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			uri := registerKeyStore(t, &keyStore{keys: tt.keys})
			var stdout, stderr bytes.Buffer
			code := Main([]string{"server-key", "list", "--store", uri}, nil, &stdout, &stderr)
			if code != tt.wantCode {
				t.Fatalf("server-key list = exit %d, stderr %q; want %d", code, stderr.String(), tt.wantCode)
			}
			if got := strings.Split(strings.TrimSpace(stdout.String()), "\n"); tt.wantStdout != nil && strings.Join(got, "\n") != strings.Join(tt.wantStdout, "\n") {
				t.Errorf("server-key list =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.wantStdout, "\n"))
			}
			if tt.wantStdout == nil && stdout.Len() != 0 {
				t.Errorf("server-key list = stdout %q, want none", stdout.String())
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("server-key list = stderr %q, want it to contain %q", stderr.String(), tt.wantStderr)
			}
		})
	}
}

// TestServerKeyRetireRefused checks what retire says when the store
// refuses: the store's atomic last-key check (another operator retired
// the other key in the meantime) and a key retired under our feet.
func TestServerKeyRetireRefused(t *testing.T) {
	keys := []store.ServerKey{{Public: serverKeyFake(2)}, {Public: serverKeyFake(1)}}
	tests := []struct {
		name       string
		retireErr  error
		key        []byte
		wantStderr string
	}{
		{"last key", fmt.Errorf("retiring server key: %w", store.ErrLastKey), serverKeyFake(1),
			"cardlink: retiring server key: the last current server key cannot be retired\n" +
				"hint: add a new key first with 'cardlink server-key rotate'\n"},
		{"not current", nil, serverKeyFake(7),
			"cardlink: " + base64.StdEncoding.EncodeToString(serverKeyFake(7)) + " is not a current server key (unknown or already retired)\n" +
				"hint: see 'cardlink server-key list'\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			uri := registerKeyStore(t, &keyStore{keys: keys, retireErr: tt.retireErr})
			var stdout, stderr bytes.Buffer
			code := Main([]string{"server-key", "retire", "--store", uri, "--key", base64.StdEncoding.EncodeToString(tt.key)}, nil, &stdout, &stderr)
			if code == 0 || stderr.String() != tt.wantStderr || stdout.Len() != 0 {
				t.Errorf("server-key retire = exit %d, stdout %q, stderr %q; want non-zero, no stdout, stderr %q", code, stdout.String(), stderr.String(), tt.wantStderr)
			}
		})
	}
}

func TestParseServerKey(t *testing.T) {
	k := bytes.Repeat([]byte{0xfb}, 32) // base64 '+' and '/' vs '-' and '_'
	tests := []struct {
		name, in string
		ok       bool
	}{
		{"base64", base64.StdEncoding.EncodeToString(k), true},
		{"base64 unpadded", base64.RawStdEncoding.EncodeToString(k), true},
		{"base64url", base64.URLEncoding.EncodeToString(k), true},
		{"base64url unpadded", base64.RawURLEncoding.EncodeToString(k), true},
		{"hex", strings.Repeat("fb", 32), true},
		{"hex upper case", strings.Repeat("FB", 32), true},
		{"spaces around", " " + base64.StdEncoding.EncodeToString(k) + "\n", true},
		{"short", base64.StdEncoding.EncodeToString(k[:31]), false},
		{"hex short", strings.Repeat("fb", 31), false},
		{"garbage", "not a key!", false},
		{"empty", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseServerKey(tt.in)
			if tt.ok && (err != nil || !bytes.Equal(got, k)) {
				t.Fatalf("parseServerKey(%q) = %x, %v; want %x", tt.in, got, err, k)
			}
			if !tt.ok && err == nil {
				t.Fatalf("parseServerKey(%q) = %x, want an error", tt.in, got)
			}
		})
	}
}
