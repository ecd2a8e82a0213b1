// Package biometric is the device's fingerprint sensor: it gives 512-bit
// templates for match-on-card, read from a file (File) or captured from a
// simulated finger with realistic noise (Sim). Match is the card's own
// rule (Hamming distance within a threshold), so the false accept and
// false reject rates Measure reports are the card's
// (docs/device-hardware.md, "Biometric sensor").
//
// It imports only hal and the standard library.
package biometric

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"

	"cardlink/internal/hal"
)

// The card's template format and matching rule (internal/applet/wallet,
// pin.go; checked against it in the tests).
const (
	// TemplateLen is the size of a template in bytes: 512 bits
	// (wallet.BioTemplateLen).
	TemplateLen = 64
	// DefaultThreshold is the card's default: the largest Hamming
	// distance in bits that matches (12.5% of the bits).
	DefaultThreshold = 64
	// MaxThreshold is the largest threshold a card accepts (25%).
	MaxThreshold = 128
)

// Distance is the Hamming distance in bits between two templates; -1 if
// either is not TemplateLen bytes.
func Distance(a, b []byte) int {
	if len(a) != TemplateLen || len(b) != TemplateLen {
		return -1
	}
	d := 0
	for i := 0; i < TemplateLen; i += 8 {
		d += bits.OnesCount64(binary.LittleEndian.Uint64(a[i:]) ^ binary.LittleEndian.Uint64(b[i:]))
	}
	return d
}

// Match is the card's rule: presented matches enrolled if both are
// TemplateLen bytes and they differ in at most threshold bits.
func Match(enrolled, presented []byte, threshold int) bool {
	d := Distance(enrolled, presented)
	return d >= 0 && d <= threshold
}

// ErrFormat is what ParseTemplate returns (wrapped) for bytes that are
// not a template.
var ErrFormat = errors.New("not a biometric template")

// ParseTemplate reads a template: TemplateLen raw bytes, or 2×TemplateLen
// hexadecimal digits (surrounding white space ignored).
func ParseTemplate(b []byte) ([]byte, error) {
	if len(b) == TemplateLen {
		return append([]byte(nil), b...), nil
	}
	t := bytes.TrimSpace(b)
	if len(t) == 2*TemplateLen {
		out := make([]byte, TemplateLen)
		if _, err := hex.Decode(out, t); err == nil {
			return out, nil
		}
	}
	return nil, fmt.Errorf("biometric: %d bytes: %w (want %d raw bytes or %d hex digits)", len(b), ErrFormat, TemplateLen, 2*TemplateLen)
}

// maxFile is the largest template file File reads: hex with room for
// white space.
const maxFile = 4 * TemplateLen

// File is a sensor that reads its template from a file at every capture
// (what an external sensor that drops templates in a file looks like).
type File struct {
	Path string
}

var _ hal.Sensor = File{}

// Capture reads and parses the file; it fails if ctx has ended, the file
// cannot be read or holds no template.
func (f File) Capture(ctx context.Context) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("capturing template: %w", err)
	}
	fd, err := os.Open(f.Path)
	if err != nil {
		return nil, fmt.Errorf("capturing template: %w", err)
	}
	defer fd.Close()
	b, err := io.ReadAll(io.LimitReader(fd, maxFile+1))
	if err != nil {
		return nil, fmt.Errorf("capturing template from %s: %w", f.Path, err)
	}
	if len(b) > maxFile {
		return nil, fmt.Errorf("capturing template from %s: more than %d bytes: %w", f.Path, maxFile, ErrFormat)
	}
	t, err := ParseTemplate(b)
	if err != nil {
		return nil, fmt.Errorf("capturing template from %s: %w", f.Path, err)
	}
	return t, nil
}
