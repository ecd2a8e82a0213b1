package nvm_test

import (
	"errors"
	"maps"
	"strings"
	"testing"

	"cardlink/internal/card/nvm"
)

// seedMedia returns valid media to seed FuzzOpen with.
func seedMedia(t testing.TB) [][]byte {
	var seeds [][]byte
	for _, cs := range [][]change{
		nil,
		{{"a": "1"}},
		{{"a": "1", "wallet/pin": "1234"}, {"piv/5FC105": strings.Repeat("c", 70), "a": del}},
	} {
		mem, m := newMem(t, 128)
		for _, c := range cs {
			if err := mem.Update(c.apply); err != nil {
				t.Fatal(err)
			}
		}
		seeds = append(seeds, m.Bytes())
	}
	return seeds
}

// FuzzOpen opens arbitrary media: Open must not panic, and a medium it
// accepts must take an update that a fresh Open then sees.
func FuzzOpen(f *testing.F) {
	for _, s := range seedMedia(f) {
		f.Add(s)
	}
	f.Add([]byte{})
	f.Add([]byte("cardnvm\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m := nvm.NewMemMedium(len(b))
		m.WriteAt(b, 0)
		mem, err := nvm.Open(m)
		if err != nil {
			if !errors.Is(err, nvm.ErrCorrupt) {
				t.Fatalf("Open = %v, want nil or ErrCorrupt", err)
			}
			return
		}
		want := snapshot(mem)
		if used := mem.Used(); used > mem.Capacity() {
			t.Fatalf("Used() = %d over Capacity() = %d", used, mem.Capacity())
		}
		err = mem.Update(change{"fuzz": "value"}.apply)
		switch {
		case err == nil:
			want["fuzz"] = "value"
		case !errors.Is(err, nvm.ErrFull):
			t.Fatalf("Update = %v, want nil or ErrFull", err)
		}
		if got := snapshot(mem); !maps.Equal(got, want) {
			t.Fatalf("state after Update = %q, want %q", got, want)
		}
		again, err := nvm.Open(m)
		if err != nil {
			t.Fatalf("Open(after Update) = %v", err)
		}
		if got := snapshot(again); !maps.Equal(got, want) {
			t.Fatalf("Open(after Update) state = %q, want %q", got, want)
		}
	})
}
