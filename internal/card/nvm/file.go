package nvm

import (
	"fmt"
	"os"
)

var _ Medium = (*os.File)(nil)

// CreateFile creates a file at path sized for a memory of the given
// capacity, formats it and opens it. It fails if the file exists. The
// Memory owns the file: Close closes it.
func CreateFile(path string, capacity int) (*Memory, error) {
	if capacity < 0 || capacity > MaxCapacity {
		return nil, fmt.Errorf("nvm: creating %s: capacity %d out of range 0..%d", path, capacity, MaxCapacity)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("nvm: creating memory file: %w", err)
	}
	mem, err := createFile(f, capacity)
	if err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("nvm: creating %s: %w", path, err)
	}
	return mem, nil
}

func createFile(f *os.File, capacity int) (*Memory, error) {
	if err := f.Truncate(int64(MediumSize(capacity))); err != nil {
		return nil, err
	}
	if err := Format(f, capacity); err != nil {
		return nil, err
	}
	return Open(f)
}

// OpenFile opens the memory in the file at path, made by CreateFile. The
// Memory owns the file: Close closes it.
func OpenFile(path string) (*Memory, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("nvm: opening memory file: %w", err)
	}
	mem, err := Open(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("nvm: opening %s: %w", path, err)
	}
	return mem, nil
}
