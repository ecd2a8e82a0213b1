package device

import (
	"bytes"
	"errors"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/flynn/noise"

	"cardlink/internal/channel"
)

func newIdentity(t testing.TB) Identity {
	t.Helper()
	k, err := channel.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	s1, _ := channel.GenerateKey(nil)
	s2, _ := channel.GenerateKey(nil)
	return Identity{ID: "dev-1", Static: k, ServerKeys: [][]byte{s1.Public, s2.Public}, Server: "127.0.0.1:7430"}
}

func TestMemoryRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "device.nvm")
	m, err := CreateMemory(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Identity(); !errors.Is(err, ErrNotProvisioned) {
		t.Fatalf("Identity() of a new memory = %v, want ErrNotProvisioned", err)
	}
	id := newIdentity(t)
	if err := m.SetIdentity(id); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := CreateMemory(path); err == nil {
		t.Fatal("CreateMemory(existing) = nil error, want one")
	}
	m, err = OpenMemory(path)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	got, err := m.Identity()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, id) {
		t.Fatalf("Identity() after reopen = %+v, want %+v", got, id)
	}
}

func TestSetIdentityRefuses(t *testing.T) {
	good := newIdentity(t)
	tests := []struct {
		name   string
		change func(*Identity)
	}{
		{"no server key", func(id *Identity) { id.ServerKeys = nil }},
		{"short server key", func(id *Identity) { id.ServerKeys = [][]byte{make([]byte, 31)} }},
		{"too many server keys", func(id *Identity) {
			id.ServerKeys = slicesRepeat(id.ServerKeys[0], MaxServerKeys+1)
		}},
		{"no static key", func(id *Identity) { id.Static = noise.DHKey{} }},
		{"long server address", func(id *Identity) { id.Server = string(bytes.Repeat([]byte("a"), maxText+1)) }},
		{"invalid UTF-8 id", func(id *Identity) { id.ID = "\xff" }},
	}
	m, err := CreateMemory(filepath.Join(t.TempDir(), "device.nvm"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.SetIdentity(good); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := good
			id.ServerKeys = append([][]byte(nil), good.ServerKeys...)
			tt.change(&id)
			if err := m.SetIdentity(id); err == nil {
				t.Fatalf("SetIdentity(%s) = nil, want an error", tt.name)
			}
			got, err := m.Identity()
			if err != nil || !reflect.DeepEqual(got, good) {
				t.Fatalf("Identity() after refused SetIdentity = %+v, %v; want the old identity", got, err)
			}
		})
	}
}

func slicesRepeat(k []byte, n int) [][]byte {
	var out [][]byte
	for range n {
		out = append(out, k)
	}
	return out
}

func TestParseIdentityRefuses(t *testing.T) {
	id := newIdentity(t)
	good := map[string][]byte{
		keyStatic:     id.Static.Private,
		keyServerKeys: bytes.Join(id.ServerKeys, nil),
		keyServer:     []byte(id.Server),
		keyID:         []byte(id.ID),
	}
	tests := []struct {
		name string
		key  string
		val  []byte
	}{
		{"short static key", keyStatic, make([]byte, 31)},
		{"no server keys", keyServerKeys, nil},
		{"server keys not whole", keyServerKeys, make([]byte, 33)},
		{"too many server keys", keyServerKeys, make([]byte, 32*(MaxServerKeys+1))},
		{"bad id", keyID, []byte{0xff}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			recs := map[string][]byte{}
			for k, v := range good {
				recs[k] = v
			}
			recs[tt.key] = tt.val
			if _, err := parseIdentity(func(k string) []byte { return recs[k] }); err == nil || errors.Is(err, ErrNotProvisioned) {
				t.Fatalf("parseIdentity(%s) = %v, want a decoding error", tt.name, err)
			}
		})
	}
}

// FuzzParseIdentity feeds arbitrary records to parseIdentity: it must not
// panic, and what it accepts must store and read back unchanged.
func FuzzParseIdentity(f *testing.F) {
	id := newIdentity(f)
	f.Add(id.Static.Private, bytes.Join(id.ServerKeys, nil), []byte(id.Server), []byte(id.ID))
	f.Add(make([]byte, 32), make([]byte, 32), []byte(""), []byte(""))
	f.Add([]byte{1}, make([]byte, 33), []byte("x"), []byte{0xff})
	f.Fuzz(func(t *testing.T, static, serverKeys, server, devID []byte) {
		recs := map[string][]byte{keyStatic: static, keyServerKeys: serverKeys, keyServer: server, keyID: devID}
		got, err := parseIdentity(func(k string) []byte { return recs[k] })
		if err != nil {
			return
		}
		if err := got.Validate(); err != nil {
			t.Fatalf("parseIdentity accepted an identity that Validate refuses: %v", err)
		}
		if !bytes.Equal(got.Static.Private, static) || !bytes.Equal(bytes.Join(got.ServerKeys, nil), serverKeys) {
			t.Fatalf("parseIdentity changed the keys")
		}
	})
}
