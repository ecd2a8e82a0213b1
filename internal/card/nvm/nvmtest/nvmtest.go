// Package nvmtest holds test helpers for package nvm: a medium that loses
// power at a chosen write. It imports only nvm and the standard library and
// is imported only by tests.
package nvmtest

import (
	"fmt"
	"sync"

	"cardlink/internal/card/nvm"
)

// Tearing is a Medium that wraps another and can lose power at a chosen
// write, tearing it. While powered it passes every call through. Once
// power is lost, every WriteAt and Sync fails with an error wrapping
// nvm.ErrPowerLost and changes nothing, while ReadAt still works: reads
// model the next power-up, which sees exactly what reached the medium.
// Restore brings power back.
//
// It is safe for concurrent use.
type Tearing struct {
	m nvm.Medium

	mu       sync.Mutex
	writes   int  // WriteAt calls so far
	cutAt    int  // index in writes of the write to tear; -1 if none
	keep     int  // bytes the torn write keeps
	cutSync  bool // the next Sync loses power
	powerOff bool
}

var _ nvm.Medium = (*Tearing)(nil)

// NewTearing returns a powered Tearing over m with no cut arranged.
func NewTearing(m nvm.Medium) *Tearing {
	return &Tearing{m: m, cutAt: -1}
}

// Writes returns the number of WriteAt calls made on t so far, including
// failed ones.
func (t *Tearing) Writes() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.writes
}

// CutAt arranges that write number n (0-based, counted from this call)
// writes only the first keep bytes of its buffer (keep may be 0; a keep at
// or beyond the buffer's length writes it whole) and returns an error
// wrapping nvm.ErrPowerLost, after which power stays off. It replaces any
// cut arranged before. It panics if n or keep is negative.
func (t *Tearing) CutAt(n, keep int) {
	if n < 0 || keep < 0 {
		panic("nvmtest: CutAt: negative argument")
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cutAt = t.writes + n
	t.keep = keep
	t.cutSync = false
}

// CutAtSync arranges that the next Sync loses power instead of flushing:
// it returns an error wrapping nvm.ErrPowerLost (what was written before
// stays written) and power stays off. It replaces any cut arranged before.
func (t *Tearing) CutAtSync() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cutAt = -1
	t.cutSync = true
}

// Restore brings power back: writes are accepted again and no cut is
// arranged.
func (t *Tearing) Restore() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.powerOff = false
	t.cutAt = -1
	t.cutSync = false
}

// PowerLost reports whether power is off.
func (t *Tearing) PowerLost() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.powerOff
}

// ReadAt implements io.ReaderAt; it works with or without power.
func (t *Tearing) ReadAt(p []byte, off int64) (int, error) {
	return t.m.ReadAt(p, off)
}

// WriteAt implements io.WriterAt, tearing the write if a cut is due.
func (t *Tearing) WriteAt(p []byte, off int64) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	i := t.writes
	t.writes++
	if t.powerOff {
		return 0, fmt.Errorf("writing %d bytes at %d: %w", len(p), off, nvm.ErrPowerLost)
	}
	if i != t.cutAt {
		return t.m.WriteAt(p, off)
	}
	t.powerOff = true
	t.cutAt = -1
	n := 0
	if k := min(t.keep, len(p)); k > 0 {
		var err error
		n, err = t.m.WriteAt(p[:k], off)
		if err != nil {
			return n, err
		}
	}
	return n, fmt.Errorf("writing %d bytes at %d: torn after %d: %w", len(p), off, n, nvm.ErrPowerLost)
}

// Sync implements nvm.Medium.
func (t *Tearing) Sync() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.powerOff {
		return fmt.Errorf("syncing: %w", nvm.ErrPowerLost)
	}
	if t.cutSync {
		t.cutSync = false
		t.powerOff = true
		return fmt.Errorf("syncing: %w", nvm.ErrPowerLost)
	}
	return t.m.Sync()
}
