package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"cardlink/internal/store"
)

// fake is a Store that only records the URI it was opened with.
type fake struct {
	store.Store
	uri string
}

var errFake = errors.New("fake backend refused")

func init() {
	store.Register("fake", func(ctx context.Context, uri string) (store.Store, error) {
		if strings.HasSuffix(uri, "refuse") {
			return nil, errFake
		}
		return &fake{uri: uri}, nil
	})
}

func TestOpen(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		uri     string
		wantErr string // substring; empty for success
	}{
		{"fake:/var/lib/cardlink/x.db", ""},
		{"fake:", ""},
		{"fake:refuse", "fake backend refused"},
		{"nosuch:/x", `unknown scheme "nosuch"`},
		{"", "no scheme"},
		{"/var/lib/cardlink/x.db", "no scheme"},
		{":x", "no scheme"},
	}
	for _, tt := range tests {
		s, err := store.Open(ctx, tt.uri)
		if tt.wantErr == "" {
			f, ok := s.(*fake)
			if err != nil || !ok || f.uri != tt.uri {
				t.Errorf("Open(%q) = %v, %v; want the fake backend given the whole URI", tt.uri, s, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("Open(%q) = %v, want error containing %q", tt.uri, err, tt.wantErr)
		}
	}
}

func TestOpenNamesSchemes(t *testing.T) {
	_, err := store.Open(context.Background(), "nosuch:/x")
	if err == nil || !strings.Contains(err.Error(), "fake") {
		t.Fatalf("Open(unknown scheme) = %v, want the registered schemes listed", err)
	}
}

func TestRegisterTwicePanics(t *testing.T) {
	tests := []struct {
		name   string
		scheme string
		open   store.OpenFunc
	}{
		{"duplicate", "fake", func(context.Context, string) (store.Store, error) { return nil, nil }},
		{"empty scheme", "", func(context.Context, string) (store.Store, error) { return nil, nil }},
		{"nil function", "other", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("Register(%q) did not panic", tt.scheme)
				}
			}()
			store.Register(tt.scheme, tt.open)
		})
	}
}

func TestAuthStatusString(t *testing.T) {
	tests := []struct {
		s    store.AuthStatus
		want string
	}{
		{store.AuthPending, "pending"},
		{store.AuthApproved, "approved"},
		{store.AuthRefused, "refused"},
		{store.AuthExpired, "expired"},
		{store.AuthCancelled, "cancelled"},
		{0, "AuthStatus(0)"},
		{200, "AuthStatus(200)"},
	}
	for _, tt := range tests {
		if got := tt.s.String(); got != tt.want {
			t.Errorf("AuthStatus(%d).String() = %q, want %q", uint8(tt.s), got, tt.want)
		}
	}
}

func TestRecordFlags(t *testing.T) {
	var c store.Card
	var d store.Device
	if c.Revoked() || c.Cloned() || d.Revoked() {
		t.Fatalf("zero Card/Device: Revoked/Cloned = true, want false")
	}
}
