package device

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/flynn/noise"

	"cardlink/internal/card/nvm"
	"cardlink/internal/card/nvm/nvmtest"
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

func TestSetServerKeys(t *testing.T) {
	id := newIdentity(t)
	k1, k2 := id.ServerKeys[0], id.ServerKeys[1]
	tests := []struct {
		name string
		keys [][]byte
		ok   bool
	}{
		{"one key", [][]byte{k2}, true},
		{"two keys", [][]byte{k2, k1}, true},
		{"most keys", func() [][]byte {
			ks := make([][]byte, MaxServerKeys)
			for i := range ks {
				ks[i] = bytes.Repeat([]byte{byte(i + 1)}, channel.KeyLen)
			}
			return ks
		}(), true},
		{"no keys", nil, false},
		{"short key", [][]byte{k1[:31]}, false},
		{"long key", [][]byte{append(bytes.Clone(k1), 0)}, false},
		{"duplicate key", [][]byte{k1, k2, k1}, false},
		{"too many keys", slicesRepeat(k1, MaxServerKeys+1), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := CreateMemory(filepath.Join(t.TempDir(), "device.nvm"))
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			if err := m.SetIdentity(id); err != nil {
				t.Fatal(err)
			}
			err = m.SetServerKeys(tt.keys)
			if (err == nil) != tt.ok {
				t.Fatalf("SetServerKeys(%s) = %v, want success %v", tt.name, err, tt.ok)
			}
			want := id
			if tt.ok {
				want.ServerKeys = tt.keys
			}
			if got, err := m.Identity(); err != nil || !reflect.DeepEqual(got, want) {
				t.Fatalf("Identity() after SetServerKeys(%s) = %+v, %v; want %+v", tt.name, got, err, want)
			}
		})
	}
	m, err := CreateMemory(filepath.Join(t.TempDir(), "device.nvm"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.SetServerKeys([][]byte{k1}); !errors.Is(err, ErrNotProvisioned) {
		t.Fatalf("SetServerKeys() on an empty memory = %v, want ErrNotProvisioned", err)
	}
}

// TestSetServerKeysTearing cuts power at every write of a server key
// update, keeping several lengths of the torn write, and at the sync: on
// the next power-up the device holds the old list or the new one, never a
// mix, and the rest of its identity is intact. A cut at the last write or
// the sync may leave either, and later writes work again.
func TestSetServerKeysTearing(t *testing.T) {
	const capacity = MemoryCapacity
	id := newIdentity(t)
	id.ServerKeys = id.ServerKeys[:1]
	k2, err := channel.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	newKeys := [][]byte{k2.Public, id.ServerKeys[0]}
	setup := func(t *testing.T) (*Memory, *nvmtest.Tearing, *nvm.MemMedium) {
		t.Helper()
		medium := nvm.NewMemMedium(nvm.MediumSize(capacity))
		tm := nvmtest.NewTearing(medium)
		if err := nvm.Format(tm, capacity); err != nil {
			t.Fatal(err)
		}
		mem, err := nvm.Open(tm)
		if err != nil {
			t.Fatal(err)
		}
		m := &Memory{mem: mem}
		if err := m.SetIdentity(id); err != nil {
			t.Fatal(err)
		}
		return m, tm, medium
	}
	// Count the writes one update takes.
	m, tm, _ := setup(t)
	before := tm.Writes()
	if err := m.SetServerKeys(newKeys); err != nil {
		t.Fatal(err)
	}
	writes := tm.Writes() - before
	if writes == 0 {
		t.Fatal("SetServerKeys made no writes")
	}
	sawOld, sawNew := false, false
	for n := 0; n <= writes; n++ {
		for _, keep := range []int{0, 1, nvm.PageSize / 2, nvm.PageSize - 1} {
			if n == writes && keep != 0 {
				continue // n == writes is the cut at Sync
			}
			name := fmt.Sprintf("write%d/keep%d", n, keep)
			if n == writes {
				name = "sync"
			}
			t.Run(name, func(t *testing.T) {
				m, tm, medium := setup(t)
				if n == writes {
					tm.CutAtSync()
				} else {
					tm.CutAt(n, keep)
				}
				if err := m.SetServerKeys(newKeys); err == nil {
					t.Fatal("SetServerKeys() with power cut = nil error, want one")
				}
				// Power up on what reached the medium.
				mem, err := nvm.Open(medium)
				if err != nil {
					t.Fatalf("nvm.Open() after the cut = %v", err)
				}
				after := &Memory{mem: mem}
				got, err := after.Identity()
				if err != nil {
					t.Fatalf("Identity() after the cut = %v", err)
				}
				want := id
				switch {
				case reflect.DeepEqual(got.ServerKeys, id.ServerKeys):
					sawOld = true
				case reflect.DeepEqual(got.ServerKeys, newKeys):
					sawNew = true
					want.ServerKeys = newKeys
				default:
					t.Fatalf("server keys after the cut = %x, want the old %x or the new %x", got.ServerKeys, id.ServerKeys, newKeys)
				}
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("Identity() after the cut = %+v, want %+v", got, want)
				}
				// The device works again: it can take the update now.
				if err := after.SetServerKeys(newKeys); err != nil {
					t.Fatalf("SetServerKeys() after power-up = %v", err)
				}
				if got, err := after.Identity(); err != nil || !reflect.DeepEqual(got.ServerKeys, newKeys) {
					t.Fatalf("Identity() after a second update = %+v, %v; want the new keys", got, err)
				}
			})
		}
	}
	if !sawOld || !sawNew {
		t.Errorf("cuts left the old keys: %v, the new keys: %v; want both seen", sawOld, sawNew)
	}
}
