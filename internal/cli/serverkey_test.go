package cli

import (
	"bytes"
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"cardlink/internal/store"
)

// historyStore is a store whose only abilities are the server keys, with
// the optional history of retired keys.
type historyStore struct {
	store.Store // nil: any other method panics
	keys        []store.ServerKey
}

func (h *historyStore) ServerKeys(context.Context) ([]store.ServerKey, error) {
	var cur []store.ServerKey
	for _, k := range h.keys {
		if k.RetiredAt.IsZero() {
			cur = append(cur, k)
		}
	}
	return cur, nil
}

func (h *historyStore) ServerKeyHistory(context.Context) ([]store.ServerKey, error) {
	return h.keys, nil
}

func (h *historyStore) Close() error { return nil }

// TestServerKeyListHistory lists from a store that keeps retired keys:
// each line says when the key was added and retired.
func TestServerKeyListHistory(t *testing.T) {
	day := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	key := func(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }
	st := &historyStore{keys: []store.ServerKey{
		{Public: key(3), Created: day.Add(48 * time.Hour)},
		{Public: key(2), Created: day.Add(24 * time.Hour)},
		{Public: key(1), Created: day, RetiredAt: day.Add(72 * time.Hour)},
	}}
	store.Register("historytest", func(context.Context, string) (store.Store, error) { return st, nil })
	var stdout, stderr bytes.Buffer
	if code := Main([]string{"server-key", "list", "--store", "historytest:"}, nil, &stdout, &stderr); code != 0 {
		t.Fatalf("server-key list = exit %d, stderr %q; want 0", code, stderr.String())
	}
	b64 := func(b byte) string { return base64.StdEncoding.EncodeToString(key(b)) }
	want := []string{
		b64(3) + "  newest   added 2026-11-30T12:00:00Z",
		b64(2) + "  current  added 2026-11-29T12:00:00Z",
		b64(1) + "  retired  added 2026-11-28T12:00:00Z  retired 2026-12-01T12:00:00Z",
	}
	if got := strings.Split(strings.TrimSpace(stdout.String()), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("server-key list =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
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
