// Package pcsc is the reader driver for PC/SC: real readers, and the
// virtual card attached through vpcd, reached through pcscd (pcsc-lite).
// It registers the URI scheme "pcsc": "pcsc:" alone opens the only reader,
// or else the first reader holding a card; "pcsc:NAME" opens the reader
// named NAME exactly, or else the one reader whose name contains NAME
// (ignoring case).
//
// The PC/SC calls need cgo and libpcsclite, so they sit in pcsc_pcsc.go
// behind the build tag "pcsc" (and cgo). Without them every call fails with
// ErrNotBuilt, which says how to rebuild. The package imports reader and the
// standard library (and C); it must not import card code.
package pcsc

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"cardlink/internal/reader"
)

// ErrNotBuilt is returned by every call of a binary built without the
// "pcsc" build tag or without cgo.
var ErrNotBuilt = errors.New("PC/SC support not built in: rebuild with -tags pcsc (needs cgo, libpcsclite-dev and a running pcscd)")

// ErrNoReader means no reader matches the name asked for.
var ErrNoReader = errors.New("pcsc: no such reader")

func init() {
	reader.Register("pcsc", func(ctx context.Context, rest string) (reader.Reader, error) {
		return Open(ctx, rest)
	})
}

var (
	_ reader.Reader  = (*Reader)(nil)
	_ reader.Watcher = (*Reader)(nil)
	_ reader.Conn    = (*Conn)(nil)
)

// Open finds the reader name selects (see the package doc) among the
// readers pcscd knows. It fails with ErrNoReader (wrapped, with the reader
// names) when none or several match, and with the PC/SC error when pcscd
// cannot be reached.
func Open(ctx context.Context, name string) (*Reader, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	names, err := List(ctx)
	if err != nil {
		return nil, err
	}
	var present map[string]bool
	if name == "" && len(names) > 1 {
		if present, err = cardsPresent(ctx, names); err != nil {
			return nil, err
		}
	}
	got, err := pick(names, name, present)
	if err != nil {
		return nil, err
	}
	return &Reader{name: got}, nil
}

// pick returns the reader name selects among names: with name "", the only
// reader, or else the first one whose present entry is true; otherwise the
// reader named name exactly, or else the one whose name contains name,
// ignoring case.
func pick(names []string, name string, present map[string]bool) (string, error) {
	if len(names) == 0 {
		return "", fmt.Errorf("%w: pcscd lists no readers", ErrNoReader)
	}
	known := func() string { return "readers: " + quoteAll(names) }
	if name == "" {
		if len(names) == 1 {
			return names[0], nil
		}
		for _, n := range names {
			if present[n] {
				return n, nil
			}
		}
		return "", fmt.Errorf("%w: no reader holds a card (%s)", ErrNoReader, known())
	}
	var matches []string
	for _, n := range names {
		if n == name {
			return n, nil
		}
		if strings.Contains(strings.ToLower(n), strings.ToLower(name)) {
			matches = append(matches, n)
		}
	}
	switch len(matches) {
	case 0:
		return "", fmt.Errorf("%w: none matches %q (%s)", ErrNoReader, name, known())
	case 1:
		return matches[0], nil
	}
	return "", fmt.Errorf("%w: %q matches %d readers (%s); give more of the name", ErrNoReader, name, len(matches), quoteAll(matches))
}

func quoteAll(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	return strings.Join(q, ", ")
}

// Reader is a PC/SC reader known by name. It holds no PC/SC resources
// itself: each Conn, Present and Wait uses its own PC/SC context. It is safe
// for concurrent use.
type Reader struct {
	name string
}

// Name returns the reader's name as pcscd lists it.
func (r *Reader) Name() string { return r.name }

// ErrClosed is returned by a Conn used after Close.
var ErrClosed = errors.New("pcsc: connection closed")

// Error is a failed PC/SC call: the function and its return code
// (pcsclite.h). Unwrap gives reader.ErrNoCard or reader.ErrCardRemoved for
// the codes that mean those.
type Error struct {
	Op   string // the PC/SC function, such as "SCardTransmit"
	Code uint32 // the return code, such as 0x80100069
}

// Return codes this package names or branches on (pcsclite.h).
const (
	rcCancelled          = 0x80100002
	rcUnknownReader      = 0x80100009
	rcTimeout            = 0x8010000A
	rcNoSmartcard        = 0x8010000C
	rcReaderUnavailable  = 0x80100017
	rcNoService          = 0x8010001D
	rcServiceStopped     = 0x8010001E
	rcNoReadersAvailable = 0x8010002E
	rcUnresponsiveCard   = 0x80100066
	rcUnpoweredCard      = 0x80100067
	rcResetCard          = 0x80100068
	rcRemovedCard        = 0x80100069
)

var rcText = map[uint32]string{
	rcCancelled:          "cancelled",
	rcUnknownReader:      "unknown reader",
	rcTimeout:            "timeout",
	rcNoSmartcard:        "no card in the reader",
	rcReaderUnavailable:  "reader unavailable",
	rcNoService:          "pcscd is not running",
	rcServiceStopped:     "pcscd stopped",
	rcNoReadersAvailable: "no readers",
	rcUnresponsiveCard:   "card does not answer",
	rcUnpoweredCard:      "card unpowered",
	rcResetCard:          "card was reset by another application",
	rcRemovedCard:        "card removed",
	0x80100001:           "internal error",
	0x80100003:           "invalid handle",
	0x80100004:           "invalid parameter",
	0x80100008:           "buffer too small",
	0x8010000B:           "sharing violation",
	0x8010000F:           "protocol mismatch",
	0x80100013:           "communication error",
	0x80100014:           "unknown error",
	0x80100016:           "not transacted",
	0x8010002F:           "communication data lost",
}

func (e *Error) Error() string {
	text := rcText[e.Code]
	if text == "" {
		text = "error"
	}
	return fmt.Sprintf("pcsc: %s: %s (%#08x)", e.Op, text, e.Code)
}

// Unwrap returns reader.ErrNoCard for "no card", reader.ErrCardRemoved
// for a card that was removed, reset by another application or unpowered,
// and nil otherwise.
func (e *Error) Unwrap() error {
	switch e.Code {
	case rcNoSmartcard:
		return reader.ErrNoCard
	case rcRemovedCard, rcResetCard, rcUnpoweredCard:
		return reader.ErrCardRemoved
	}
	return nil
}
