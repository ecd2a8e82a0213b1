//go:build !pcsc || !cgo

package pcsc

import (
	"context"

	"cardlink/internal/reader"
)

// List returns the names of the readers pcscd knows. Without the "pcsc"
// build tag it fails with ErrNotBuilt.
func List(ctx context.Context) ([]string, error) { return nil, ErrNotBuilt }

func cardsPresent(ctx context.Context, names []string) (map[string]bool, error) {
	return nil, ErrNotBuilt
}

// Present reports whether a card is in the reader. Without the "pcsc"
// build tag it fails with ErrNotBuilt.
func (r *Reader) Present(ctx context.Context) (bool, error) { return false, ErrNotBuilt }

// Wait blocks until the card's presence differs from present. Without the
// "pcsc" build tag it fails with ErrNotBuilt.
func (r *Reader) Wait(ctx context.Context, present bool) error { return ErrNotBuilt }

// Connect connects to the card. Without the "pcsc" build tag it fails with
// ErrNotBuilt.
func (r *Reader) Connect(ctx context.Context) (reader.Conn, error) { return nil, ErrNotBuilt }

// Conn is a PC/SC connection to a card. Without the "pcsc" build tag none
// can be made; its methods fail with ErrNotBuilt.
type Conn struct{}

// ATR returns nil.
func (c *Conn) ATR() []byte { return nil }

// Transmit fails with ErrNotBuilt.
func (c *Conn) Transmit(ctx context.Context, apdu []byte) ([]byte, error) { return nil, ErrNotBuilt }

// Reset fails with ErrNotBuilt.
func (c *Conn) Reset(ctx context.Context) error { return ErrNotBuilt }

// Close does nothing.
func (c *Conn) Close() error { return nil }
