package device

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"

	"github.com/flynn/noise"

	"cardlink/internal/card/nvm"
	"cardlink/internal/channel"
)

// Keys of the device's memory (an nvm image).
const (
	keyStatic     = "device/static"      // the static private key, channel.KeyLen bytes
	keyServerKeys = "device/server-keys" // pinned server public keys, concatenated, channel.KeyLen bytes each
	keyServer     = "device/server"      // the server's address, text
	keyID         = "device/id"          // the ID the server gave the device, text
)

// Limits of what the memory holds.
const (
	// MemoryCapacity is the record capacity of a device memory file.
	MemoryCapacity = 4096
	// MaxServerKeys is the most pinned server keys a device keeps.
	MaxServerKeys = 8
	maxText       = 256 // Identity.Server and Identity.ID
)

// ErrNotProvisioned is returned by Memory.Identity when the memory holds
// no identity yet.
var ErrNotProvisioned = errors.New("device not provisioned")

// Identity is what a device knows about itself and its server.
type Identity struct {
	ID         string      // the server's identifier for the device
	Static     noise.DHKey // the device's static key pair
	ServerKeys [][]byte    // pinned server static public keys, newest first; at least one
	Server     string      // the server's device-listener address (host:port)
}

// Validate checks that id can be stored and used.
func (id Identity) Validate() error {
	if len(id.Static.Private) != channel.KeyLen || len(id.Static.Public) != channel.KeyLen {
		return fmt.Errorf("identity: static key pair of %d+%d bytes, want %d+%d",
			len(id.Static.Private), len(id.Static.Public), channel.KeyLen, channel.KeyLen)
	}
	if len(id.ServerKeys) == 0 || len(id.ServerKeys) > MaxServerKeys {
		return fmt.Errorf("identity: %d pinned server keys, want 1..%d", len(id.ServerKeys), MaxServerKeys)
	}
	for i, k := range id.ServerKeys {
		if len(k) != channel.KeyLen {
			return fmt.Errorf("identity: server key %d of %d bytes, want %d", i, len(k), channel.KeyLen)
		}
	}
	for name, s := range map[string]string{"id": id.ID, "server": id.Server} {
		if len(s) > maxText || !utf8.ValidString(s) {
			return fmt.Errorf("identity: %s: want at most %d bytes of UTF-8", name, maxText)
		}
	}
	return nil
}

// Memory is the device's persistent memory: an nvm file whose every update
// is atomic, so a power cut never leaves half an identity. It is safe for
// concurrent use.
type Memory struct {
	mem *nvm.Memory
}

// CreateMemory creates a new, empty device memory file at path (mode
// 0600); it fails if the file exists.
func CreateMemory(path string) (*Memory, error) {
	mem, err := nvm.CreateFile(path, MemoryCapacity)
	if err != nil {
		return nil, fmt.Errorf("creating device memory: %w", err)
	}
	return &Memory{mem: mem}, nil
}

// OpenMemory opens the device memory file at path, made by CreateMemory.
func OpenMemory(path string) (*Memory, error) {
	mem, err := nvm.OpenFile(path)
	if err != nil {
		return nil, fmt.Errorf("opening device memory: %w", err)
	}
	return &Memory{mem: mem}, nil
}

// Close closes the memory file.
func (m *Memory) Close() error { return m.mem.Close() }

// SetIdentity replaces the stored identity with id, in one atomic update.
func (m *Memory) SetIdentity(id Identity) error {
	if err := id.Validate(); err != nil {
		return fmt.Errorf("storing identity: %w", err)
	}
	err := m.mem.Update(func(tx *nvm.Tx) error {
		tx.Put(keyStatic, id.Static.Private)
		tx.Put(keyServerKeys, bytes.Join(id.ServerKeys, nil))
		tx.Put(keyServer, []byte(id.Server))
		tx.Put(keyID, []byte(id.ID))
		return nil
	})
	if err != nil {
		return fmt.Errorf("storing identity: %w", err)
	}
	return nil
}

// SetServerKeys replaces the pinned server keys (newest first) with keys,
// in one atomic update: after a power cut the memory holds the old list or
// the new one, never a mix. The rest of the identity stays. It returns
// ErrNotProvisioned when the memory holds no identity, and an error for a
// list Identity.Validate would refuse or with a key twice.
func (m *Memory) SetServerKeys(keys [][]byte) error {
	if err := validServerKeys(keys); err != nil {
		return fmt.Errorf("storing server keys: %w", err)
	}
	err := m.mem.Update(func(tx *nvm.Tx) error {
		if tx.Get(keyStatic) == nil {
			return ErrNotProvisioned
		}
		tx.Put(keyServerKeys, bytes.Join(keys, nil))
		return nil
	})
	if err != nil {
		return fmt.Errorf("storing server keys: %w", err)
	}
	return nil
}

// validServerKeys checks a list of pinned server keys.
func validServerKeys(keys [][]byte) error {
	if len(keys) == 0 || len(keys) > MaxServerKeys {
		return fmt.Errorf("%d server keys, want 1..%d", len(keys), MaxServerKeys)
	}
	for i, k := range keys {
		if len(k) != channel.KeyLen {
			return fmt.Errorf("server key %d of %d bytes, want %d", i, len(k), channel.KeyLen)
		}
		for _, prev := range keys[:i] {
			if bytes.Equal(prev, k) {
				return fmt.Errorf("server key %d pinned twice", i)
			}
		}
	}
	return nil
}

// Identity reads the stored identity. It returns ErrNotProvisioned when
// there is none, and an error when what is stored is not a valid identity.
func (m *Memory) Identity() (Identity, error) {
	return parseIdentity(m.mem.Get)
}

// parseIdentity decodes an identity from the memory's records.
func parseIdentity(get func(string) []byte) (Identity, error) {
	priv := get(keyStatic)
	if priv == nil {
		return Identity{}, ErrNotProvisioned
	}
	static, err := channel.KeyFromPrivate(priv)
	if err != nil {
		return Identity{}, fmt.Errorf("reading identity: static key: %w", err)
	}
	raw := get(keyServerKeys)
	if len(raw) == 0 || len(raw)%channel.KeyLen != 0 || len(raw)/channel.KeyLen > MaxServerKeys {
		return Identity{}, fmt.Errorf("reading identity: %d bytes of server keys, want a multiple of %d", len(raw), channel.KeyLen)
	}
	id := Identity{
		ID:         string(get(keyID)),
		Static:     static,
		ServerKeys: slices.Collect(slices.Chunk(raw, channel.KeyLen)),
		Server:     string(get(keyServer)),
	}
	if err := id.Validate(); err != nil {
		return Identity{}, fmt.Errorf("reading identity: %w", err)
	}
	return id, nil
}
