package device

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cardlink/internal/card/nvm"
	"cardlink/internal/card/nvm/nvmtest"
)

func TestSettingsRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "device.nvm")
	m, err := CreateMemory(path)
	if err != nil {
		t.Fatal(err)
	}
	if s, err := m.Settings(); err != nil || s != (Settings{}) {
		t.Fatalf("Settings() of a new memory = %+v, %v; want the zero value", s, err)
	}
	want := Settings{Payee: "Bäckerei Nord", HolderTimeout: 45 * time.Second, NoReceipts: true}
	if err := m.SetSettings(want); err != nil {
		t.Fatal(err)
	}
	m.Close()
	// Power off and on: the settings are in the file.
	m, err = OpenMemory(path)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if got, err := m.Settings(); err != nil || got != want {
		t.Errorf("Settings() after reopening = %+v, %v; want %+v", got, err, want)
	}
}

func TestSettingsRefused(t *testing.T) {
	m, err := CreateMemory(filepath.Join(t.TempDir(), "device.nvm"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	keep := Settings{Payee: "Corner Shop"}
	if err := m.SetSettings(keep); err != nil {
		t.Fatal(err)
	}
	for _, s := range []Settings{
		{Payee: strings.Repeat("x", rom.MaxPayee+1)},
		{Payee: "bad\x01name"},
		{Payee: string([]byte{0xff})},
		{HolderTimeout: time.Second},
		{HolderTimeout: rom.MaxHolderTimeout + time.Second},
		{HolderTimeout: 30*time.Second + time.Millisecond},
	} {
		if err := m.SetSettings(s); err == nil {
			t.Errorf("SetSettings(%+v) = nil, want an error", s)
		}
	}
	if got, err := m.Settings(); err != nil || got != keep {
		t.Errorf("Settings() after refused updates = %+v, %v; want %+v", got, err, keep)
	}
}

// FuzzParseSettings feeds arbitrary records to parseSettings: it must not
// panic, what it accepts is valid and encodes back to the same bytes.
func FuzzParseSettings(f *testing.F) {
	f.Add(Settings{Payee: "Corner Shop", HolderTimeout: 30 * time.Second}.encode())
	f.Add(Settings{NoReceipts: true}.encode())
	f.Add([]byte{1, 2, 0, 0, 0})
	f.Add([]byte{1, 0, 0xff, 0xff, 1, 'x'})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := parseSettings(b)
		if err != nil {
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("parseSettings accepted settings Validate refuses: %v", err)
		}
		if !bytes.Equal(s.encode(), b) {
			t.Fatalf("parseSettings(%x) = %+v, which encodes to %x", b, s, s.encode())
		}
	})
}

// TestSettingsOverride: the Controller's fields win over the stored
// settings, which win over the ROM.
func TestSettingsOverride(t *testing.T) {
	m, err := CreateMemory(filepath.Join(t.TempDir(), "device.nvm"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	c := &Controller{}
	if got := c.settings(); got != (Settings{HolderTimeout: rom.HolderTimeout}) {
		t.Errorf("settings() without memory = %+v, want the ROM's", got)
	}
	if err := m.SetSettings(Settings{Payee: "Kiosk", HolderTimeout: time.Minute}); err != nil {
		t.Fatal(err)
	}
	c.Memory = m
	if got := c.settings(); got != (Settings{Payee: "Kiosk", HolderTimeout: time.Minute}) {
		t.Errorf("settings() = %+v, want the stored ones", got)
	}
	c.Payee, c.HolderTimeout = "Corner Shop", 5*time.Second
	if got := c.settings(); got != (Settings{Payee: "Corner Shop", HolderTimeout: 5 * time.Second}) {
		t.Errorf("settings() = %+v, want the Controller's fields", got)
	}
}

// TestSetSettingsTearing cuts the power at every write of a settings
// update: after power-up the memory holds the old settings or the new
// ones, never a mix, and the identity is untouched.
func TestSetSettingsTearing(t *testing.T) {
	id := newIdentity(t)
	old := Settings{Payee: "Corner Shop"}
	next := Settings{Payee: "Night Kiosk at the station", HolderTimeout: 90 * time.Second, NoReceipts: true}
	setup := func(t *testing.T) (*Memory, *nvmtest.Tearing, *nvm.MemMedium) {
		t.Helper()
		medium := nvm.NewMemMedium(nvm.MediumSize(MemoryCapacity))
		tm := nvmtest.NewTearing(medium)
		if err := nvm.Format(tm, MemoryCapacity); err != nil {
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
		if err := m.SetSettings(old); err != nil {
			t.Fatal(err)
		}
		return m, tm, medium
	}
	m, tm, _ := setup(t)
	before := tm.Writes()
	if err := m.SetSettings(next); err != nil {
		t.Fatal(err)
	}
	writes := tm.Writes() - before
	if writes == 0 {
		t.Fatal("SetSettings made no writes")
	}
	sawOld, sawNew := false, false
	for n := 0; n <= writes; n++ {
		m, tm, medium := setup(t)
		if n == writes {
			tm.CutAtSync()
		} else {
			tm.CutAt(n, nvm.PageSize/2)
		}
		if err := m.SetSettings(next); err == nil {
			t.Fatalf("cut %d: SetSettings() = nil error, want one", n)
		}
		mem, err := nvm.Open(medium)
		if err != nil {
			t.Fatalf("cut %d: nvm.Open() = %v", n, err)
		}
		after := &Memory{mem: mem}
		got, err := after.Settings()
		switch {
		case err != nil:
			t.Fatalf("cut %d: Settings() = %v", n, err)
		case got == old:
			sawOld = true
		case got == next:
			sawNew = true
		default:
			t.Fatalf("cut %d: Settings() = %+v, want %+v or %+v", n, got, old, next)
		}
		if _, err := after.Identity(); err != nil {
			t.Fatalf("cut %d: Identity() = %v", n, err)
		}
	}
	if !sawOld || !sawNew {
		t.Errorf("cuts left the old settings: %v, the new: %v; want both seen", sawOld, sawNew)
	}
}
