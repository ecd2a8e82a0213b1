//go:build !pcsc || !cgo

package pcsc

import (
	"errors"
	"testing"

	"cardlink/internal/reader"
)

// TestNotBuilt checks that a binary without the pcsc tag says how to get
// PC/SC support, through the package and through the URI registry.
func TestNotBuilt(t *testing.T) {
	if _, err := List(t.Context()); !errors.Is(err, ErrNotBuilt) {
		t.Errorf("List() = %v, want ErrNotBuilt", err)
	}
	if _, err := Open(t.Context(), ""); !errors.Is(err, ErrNotBuilt) {
		t.Errorf("Open(\"\") = %v, want ErrNotBuilt", err)
	}
	for _, uri := range []string{"pcsc:", "pcsc:Virtual PCD"} {
		if _, err := reader.Open(t.Context(), uri); !errors.Is(err, ErrNotBuilt) {
			t.Errorf("reader.Open(%q) = %v, want ErrNotBuilt", uri, err)
		}
	}
	r := &Reader{name: "x"}
	if _, err := r.Connect(t.Context()); !errors.Is(err, ErrNotBuilt) {
		t.Errorf("Connect() = %v, want ErrNotBuilt", err)
	}
}
