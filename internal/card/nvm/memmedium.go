package nvm

import (
	"errors"
	"fmt"
	"io"
	"sync"
)

// MemMedium is a Medium in RAM, of fixed size. It is safe for concurrent
// use. Sync does nothing.
type MemMedium struct {
	mu  sync.Mutex
	buf []byte
}

var _ Medium = (*MemMedium)(nil)

// errOutOfRange is returned by MemMedium for writes past its end.
var errOutOfRange = errors.New("nvm: write out of medium range")

// NewMemMedium returns a zeroed medium of size bytes; MediumSize gives the
// size a capacity needs.
func NewMemMedium(size int) *MemMedium {
	return &MemMedium{buf: make([]byte, size)}
}

// ReadAt implements io.ReaderAt; it returns io.EOF when it reads past the
// end.
func (m *MemMedium) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 {
		return 0, errors.New("nvm: negative offset")
	}
	if off >= int64(len(m.buf)) {
		return 0, io.EOF
	}
	n := copy(p, m.buf[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt implements io.WriterAt; a write that does not fit writes nothing
// and fails.
func (m *MemMedium) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 || off > int64(len(m.buf)) || int64(len(p)) > int64(len(m.buf))-off {
		return 0, fmt.Errorf("%w: %d bytes at %d, size %d", errOutOfRange, len(p), off, len(m.buf))
	}
	return copy(m.buf[off:], p), nil
}

// Sync implements Medium; it does nothing.
func (m *MemMedium) Sync() error { return nil }

// Bytes returns a copy of the medium's contents.
func (m *MemMedium) Bytes() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]byte{}, m.buf...)
}
