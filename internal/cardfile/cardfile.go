// Package cardfile keeps a virtual card in a file: the file is the card's
// NVM (package nvm), and opening it builds the card with cardlink's applets
// installed in ROM. It is wiring, used by the CLI and by tests that need a
// card that survives restarts.
package cardfile

import (
	"context"
	"errors"
	"fmt"
	"os"

	pivapplet "cardlink/internal/applet/piv"
	walletapplet "cardlink/internal/applet/wallet"
	"cardlink/internal/card"
	"cardlink/internal/card/nvm"
	"cardlink/internal/reader"
	"cardlink/internal/reader/virtual"
)

// Capacity is the NVM size of a new card file, in bytes usable by records:
// enough for keys, certificate, a 16-record log and a full e-goods store.
const Capacity = 32 << 10

// ReaderName is the name the in-process reader reports.
const ReaderName = "cardlink virtual reader 00 00"

// File is an open card file: the card, its NVM and an in-process reader
// holding it.
type File struct {
	Card   *card.Card
	NVM    *nvm.Memory
	Reader *virtual.Reader
}

// Create makes a new blank card in a file that must not exist yet.
func Create(path string) (*File, error) {
	mem, err := nvm.CreateFile(path, Capacity)
	if err != nil {
		return nil, fmt.Errorf("creating card file: %w", err)
	}
	return build(mem)
}

// Open opens an existing card file.
func Open(path string) (*File, error) {
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("opening card file: %s does not exist", path)
		}
		return nil, fmt.Errorf("opening card file: %w", err)
	}
	mem, err := nvm.OpenFile(path)
	if err != nil {
		return nil, fmt.Errorf("opening card file %s: %w", path, err)
	}
	return build(mem)
}

// Applets returns a fresh set of the applets every cardlink card carries.
func Applets() []card.Applet {
	return []card.Applet{walletapplet.New(), pivapplet.New()}
}

func build(mem *nvm.Memory) (*File, error) {
	c, err := card.New(card.Config{NVM: mem, Applets: Applets()})
	if err != nil {
		mem.Close()
		return nil, fmt.Errorf("building card: %w", err)
	}
	return &File{Card: c, NVM: mem, Reader: virtual.New(c, ReaderName)}, nil
}

// Connect powers the card and opens a session.
func (f *File) Connect(ctx context.Context) (reader.Conn, error) {
	return f.Reader.Connect(ctx)
}

// Close powers the card off and closes the file.
func (f *File) Close() error {
	f.Card.PowerOff()
	return f.NVM.Close()
}
