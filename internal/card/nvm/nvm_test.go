package nvm_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"cardlink/internal/card/nvm"
	"cardlink/internal/card/nvm/nvmtest"
)

// newMem formats a MemMedium of the given capacity and opens it.
func newMem(t testing.TB, capacity int) (*nvm.Memory, *nvm.MemMedium) {
	t.Helper()
	m := nvm.NewMemMedium(nvm.MediumSize(capacity))
	if err := nvm.Format(m, capacity); err != nil {
		t.Fatalf("Format(%d) = %v", capacity, err)
	}
	mem, err := nvm.Open(m)
	if err != nil {
		t.Fatalf("Open(formatted) = %v", err)
	}
	return mem, m
}

// snapshot returns every record in mem.
func snapshot(mem *nvm.Memory) map[string]string {
	s := make(map[string]string)
	for _, k := range mem.Keys("") {
		s[k] = string(mem.Get(k))
	}
	return s
}

// change is one update: keys mapped to values, or deleted when the value is
// the string "<del>".
type change map[string]string

const del = "<del>"

func (c change) apply(tx *nvm.Tx) error {
	for k, v := range c {
		if v == del {
			tx.Delete(k)
		} else {
			tx.Put(k, []byte(v))
		}
	}
	return nil
}

func (c change) on(s map[string]string) map[string]string {
	s = maps.Clone(s)
	for k, v := range c {
		if v == del {
			delete(s, k)
		} else {
			s[k] = v
		}
	}
	return s
}

// reopen opens a copy of m's bytes, as a card powering up would.
func reopen(t *testing.T, m *nvm.MemMedium) (*nvm.Memory, error) {
	t.Helper()
	b := m.Bytes()
	c := nvm.NewMemMedium(len(b))
	if _, err := c.WriteAt(b, 0); err != nil {
		t.Fatalf("copying medium: %v", err)
	}
	return nvm.Open(c)
}

func TestRoundTrip(t *testing.T) {
	steps := []struct {
		name string
		c    change
	}{
		{"first", change{"a": "1"}},
		{"several", change{"b": "two", "wallet/pin": "1234", "piv/5FC105": strings.Repeat("x", 300)}},
		{"overwrite", change{"a": "one", "b": ""}},
		{"delete", change{"wallet/pin": del}},
		{"delete absent", change{"nope": del}},
		{"long key", change{strings.Repeat("k", nvm.MaxKeyLen): "v"}},
		{"binary", change{"bin": "\x00\xff\x00"}},
		{"delete all", change{"a": del, "b": del, "piv/5FC105": del, strings.Repeat("k", nvm.MaxKeyLen): del, "bin": del}},
	}
	mem, m := newMem(t, 1024)
	want := map[string]string{}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if err := mem.Update(st.c.apply); err != nil {
				t.Fatalf("Update(%v) = %v, want nil", st.c, err)
			}
			want = st.c.on(want)
			if got := snapshot(mem); !maps.Equal(got, want) {
				t.Errorf("after Update(%v): state = %q, want %q", st.c, got, want)
			}
			used := 0
			for k, v := range want {
				used += 5 + len(k) + len(v)
			}
			if got := mem.Used(); got != used {
				t.Errorf("Used() = %d, want %d", got, used)
			}
			again, err := reopen(t, m)
			if err != nil {
				t.Fatalf("Open(after Update) = %v", err)
			}
			if got := snapshot(again); !maps.Equal(got, want) {
				t.Errorf("Open(after Update(%v)): state = %q, want %q", st.c, got, want)
			}
			if got := again.Used(); got != used {
				t.Errorf("reopened Used() = %d, want %d", got, used)
			}
		})
	}
}

func TestEmptyValue(t *testing.T) {
	mem, _ := newMem(t, 64)
	if err := mem.Update(func(tx *nvm.Tx) error { tx.Put("e", nil); return nil }); err != nil {
		t.Fatalf("Update(Put(e, nil)) = %v", err)
	}
	if got := mem.Get("e"); got == nil || len(got) != 0 {
		t.Errorf("Get(e) = %#v, want empty non-nil", got)
	}
	if got := mem.Get("absent"); got != nil {
		t.Errorf("Get(absent) = %#v, want nil", got)
	}
}

func TestTx(t *testing.T) {
	mem, _ := newMem(t, 256)
	if err := mem.Update(change{"a": "1", "b": "2", "c": "3"}.apply); err != nil {
		t.Fatal(err)
	}
	err := mem.Update(func(tx *nvm.Tx) error {
		v := []byte("new")
		tx.Put("a", v)
		v[0] = 'X' // Put copied
		if got := string(tx.Get("a")); got != "new" {
			t.Errorf("tx.Get(a) after Put = %q, want %q", got, "new")
		}
		g := tx.Get("a")
		g[0] = 'Y' // Get copied
		if got := string(tx.Get("a")); got != "new" {
			t.Errorf("tx.Get(a) after changing a copy = %q, want %q", got, "new")
		}
		tx.Delete("b")
		if got := tx.Get("b"); got != nil {
			t.Errorf("tx.Get(b) after Delete = %q, want nil", got)
		}
		tx.Put("d", []byte("4"))
		tx.Put("e", []byte("5"))
		tx.Delete("e") // never committed
		if got, want := tx.Keys(""), []string{"a", "c", "d"}; !equalStrings(got, want) {
			t.Errorf("tx.Keys() = %q, want %q", got, want)
		}
		if got := string(mem.Get("a")); got != "1" {
			t.Errorf("mem.Get(a) inside fn = %q, want committed %q", got, "1")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Update = %v", err)
	}
	want := map[string]string{"a": "new", "c": "3", "d": "4"}
	if got := snapshot(mem); !maps.Equal(got, want) {
		t.Errorf("state = %q, want %q", got, want)
	}
	g := mem.Get("a")
	g[0] = 'Z'
	if got := string(mem.Get("a")); got != "new" {
		t.Errorf("Get(a) after changing a copy = %q, want %q", got, "new")
	}
}

func equalStrings(a, b []string) bool {
	return strings.Join(a, "\x00") == strings.Join(b, "\x00") && len(a) == len(b)
}

func TestKeys(t *testing.T) {
	mem, _ := newMem(t, 256)
	if err := mem.Update(change{"w/b": "", "w/a": "", "p/x": "", "w": ""}.apply); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		prefix string
		want   []string
	}{
		{"", []string{"p/x", "w", "w/a", "w/b"}},
		{"w/", []string{"w/a", "w/b"}},
		{"w", []string{"w", "w/a", "w/b"}},
		{"z", nil},
	}
	for _, tt := range tests {
		if got := mem.Keys(tt.prefix); !equalStrings(got, tt.want) {
			t.Errorf("Keys(%q) = %q, want %q", tt.prefix, got, tt.want)
		}
	}
}

func TestBadKeyPanics(t *testing.T) {
	tests := []struct {
		name string
		fn   func(tx *nvm.Tx)
	}{
		{"Put empty", func(tx *nvm.Tx) { tx.Put("", nil) }},
		{"Put too long", func(tx *nvm.Tx) { tx.Put(strings.Repeat("k", nvm.MaxKeyLen+1), nil) }},
		{"Delete empty", func(tx *nvm.Tx) { tx.Delete("") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mem, _ := newMem(t, 256)
			defer func() {
				if r := recover(); r == nil {
					t.Errorf("%s did not panic", tt.name)
				}
			}()
			mem.Update(func(tx *nvm.Tx) error { tt.fn(tx); return nil })
		})
	}
}

// counting returns a Memory over a Tearing medium, to count writes.
func counting(t *testing.T, capacity int) (*nvm.Memory, *nvmtest.Tearing) {
	t.Helper()
	tm := nvmtest.NewTearing(nvm.NewMemMedium(nvm.MediumSize(capacity)))
	if err := nvm.Format(tm, capacity); err != nil {
		t.Fatal(err)
	}
	mem, err := nvm.Open(tm)
	if err != nil {
		t.Fatal(err)
	}
	return mem, tm
}

func TestFnErrorWritesNothing(t *testing.T) {
	mem, tm := counting(t, 256)
	if err := mem.Update(change{"a": "1"}.apply); err != nil {
		t.Fatal(err)
	}
	w := tm.Writes()
	errFn := errors.New("refused")
	err := mem.Update(func(tx *nvm.Tx) error {
		tx.Put("a", []byte("2"))
		tx.Put("b", []byte("3"))
		return errFn
	})
	if err != errFn {
		t.Errorf("Update(failing fn) = %v, want %v", err, errFn)
	}
	if got := tm.Writes() - w; got != 0 {
		t.Errorf("Update(failing fn) made %d writes, want 0", got)
	}
	if got, want := snapshot(mem), map[string]string{"a": "1"}; !maps.Equal(got, want) {
		t.Errorf("state = %q, want %q", got, want)
	}
	if err := mem.Update(func(*nvm.Tx) error { return nil }); err != nil {
		t.Errorf("Update(no change) = %v", err)
	}
	if got := tm.Writes() - w; got != 0 {
		t.Errorf("Update(no change) made %d writes, want 0", got)
	}
}

func TestFnPanic(t *testing.T) {
	mem, tm := counting(t, 256)
	if err := mem.Update(change{"a": "1"}.apply); err != nil {
		t.Fatal(err)
	}
	w := tm.Writes()
	type boom struct{}
	func() {
		defer func() {
			if r := recover(); r != (boom{}) {
				t.Errorf("Update(panicking fn) panicked with %v, want boom{}", r)
			}
		}()
		mem.Update(func(tx *nvm.Tx) error {
			tx.Put("a", []byte("2"))
			panic(boom{})
		})
	}()
	if got := tm.Writes() - w; got != 0 {
		t.Errorf("Update(panicking fn) made %d writes, want 0", got)
	}
	if got, want := snapshot(mem), map[string]string{"a": "1"}; !maps.Equal(got, want) {
		t.Errorf("state = %q, want %q", got, want)
	}
	if err := mem.Update(change{"b": "2"}.apply); err != nil {
		t.Errorf("Update after a panic = %v, want nil", err)
	}
}

func TestTxAfterUpdatePanics(t *testing.T) {
	mem, _ := newMem(t, 64)
	var kept *nvm.Tx
	mem.Update(func(tx *nvm.Tx) error { kept = tx; return nil })
	defer func() {
		if recover() == nil {
			t.Errorf("Tx.Put after Update returned did not panic")
		}
	}()
	kept.Put("a", nil)
}

func TestCapacity(t *testing.T) {
	const capacity = 100
	tests := []struct {
		name    string
		c       change
		wantErr error
	}{
		{"exactly full", change{"k": strings.Repeat("v", capacity-6)}, nil},
		{"one byte over", change{"k": strings.Repeat("v", capacity-5)}, nvm.ErrFull},
		{"two records full", change{"a": strings.Repeat("v", 40), "b": strings.Repeat("v", capacity-12-40)}, nil},
		{"two records over", change{"a": strings.Repeat("v", 41), "b": strings.Repeat("v", capacity-12-40)}, nvm.ErrFull},
		{"value of capacity", change{"k": strings.Repeat("v", capacity)}, nvm.ErrFull},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mem, tm := counting(t, capacity)
			if err := mem.Update(change{"old": "x"}.apply); err != nil {
				t.Fatal(err)
			}
			w := tm.Writes()
			c := tt.c.on(map[string]string{"old": del})
			err := mem.Update(change(c).apply)
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("Update(%d bytes) = %v, want %v", len(tt.c), err, tt.wantErr)
			}
			if err != nil {
				if got := tm.Writes() - w; got != 0 {
					t.Errorf("Update over capacity made %d writes, want 0", got)
				}
				if got, want := snapshot(mem), map[string]string{"old": "x"}; !maps.Equal(got, want) {
					t.Errorf("state after ErrFull = %q, want %q", got, want)
				}
				if mem.Err() != nil {
					t.Errorf("Err() after ErrFull = %v, want nil", mem.Err())
				}
				return
			}
			if got := mem.Used(); got != capacity {
				t.Errorf("Used() = %d, want %d", got, capacity)
			}
			if got := mem.Capacity(); got != capacity {
				t.Errorf("Capacity() = %d, want %d", got, capacity)
			}
		})
	}
}

// TestWritesUsedPagesOnly checks a commit writes only the pages its image
// uses, each WriteAt at most one page.
func TestWritesUsedPagesOnly(t *testing.T) {
	tests := []struct {
		name  string
		value int
	}{
		{"tiny", 1},
		{"one page", 64 - 16 - 32 - 5 - 1},
		{"just over a page", 64 - 16 - 32 - 5},
		{"several pages", 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mem, tm := counting(t, 4096)
			w := tm.Writes()
			if err := mem.Update(change{"k": strings.Repeat("v", tt.value)}.apply); err != nil {
				t.Fatal(err)
			}
			img := 16 + 5 + 1 + tt.value + 32
			want := (img + nvm.PageSize - 1) / nvm.PageSize
			if got := tm.Writes() - w; got != want {
				t.Errorf("Update(%d-byte value) made %d writes, want %d", tt.value, got, want)
			}
		})
	}
}

func TestFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "card.nvm")
	mem, err := nvm.CreateFile(path, 512)
	if err != nil {
		t.Fatalf("CreateFile = %v", err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != int64(nvm.MediumSize(512)) {
		t.Errorf("file size = %v (%v), want %d", fi.Size(), err, nvm.MediumSize(512))
	}
	want := map[string]string{}
	for i := range 5 {
		c := change{fmt.Sprintf("k%d", i): strings.Repeat("v", i*30), "k0": del}
		if err := mem.Update(c.apply); err != nil {
			t.Fatalf("Update(%d) = %v", i, err)
		}
		want = c.on(want)
	}
	if err := mem.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if err := mem.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
	if err := mem.Update(change{"x": "y"}.apply); !errors.Is(err, nvm.ErrClosed) {
		t.Errorf("Update after Close = %v, want ErrClosed", err)
	}
	if got := snapshot(mem); !maps.Equal(got, want) {
		t.Errorf("state after Close = %q, want %q", got, want)
	}

	if _, err := nvm.CreateFile(path, 512); !errors.Is(err, os.ErrExist) {
		t.Errorf("CreateFile(existing) = %v, want ErrExist", err)
	}
	again, err := nvm.OpenFile(path)
	if err != nil {
		t.Fatalf("OpenFile = %v", err)
	}
	defer again.Close()
	if got := snapshot(again); !maps.Equal(got, want) {
		t.Errorf("OpenFile state = %q, want %q", got, want)
	}
	if got := again.Capacity(); got != 512 {
		t.Errorf("OpenFile Capacity() = %d, want 512", got)
	}
	if err := again.Update(change{"after": "reopen"}.apply); err != nil {
		t.Errorf("Update after OpenFile = %v", err)
	}
}

func TestOpenFileErrors(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage")
	if err := os.WriteFile(garbage, bytes.Repeat([]byte{0xA5}, 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := nvm.OpenFile(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("OpenFile(missing) = %v, want ErrNotExist", err)
	}
	if _, err := nvm.OpenFile(garbage); !errors.Is(err, nvm.ErrCorrupt) {
		t.Errorf("OpenFile(garbage) = %v, want ErrCorrupt", err)
	}
	if _, err := nvm.CreateFile(filepath.Join(dir, "neg"), -1); err == nil {
		t.Errorf("CreateFile(capacity -1) = nil error")
	}
	if _, err := os.Stat(filepath.Join(dir, "neg")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("CreateFile(capacity -1) left a file behind: %v", err)
	}
}

func TestFormat(t *testing.T) {
	if err := nvm.Format(nvm.NewMemMedium(nvm.MediumSize(100)-1), 100); err == nil {
		t.Errorf("Format(short medium) = nil error")
	}
	if err := nvm.Format(nvm.NewMemMedium(1000), -1); err == nil {
		t.Errorf("Format(capacity -1) = nil error")
	}
	// Formatting again destroys the records, whichever slot held them.
	for updates := range 3 {
		mem, m := newMem(t, 100)
		for i := range updates {
			if err := mem.Update(change{"k": fmt.Sprint(i)}.apply); err != nil {
				t.Fatal(err)
			}
		}
		if err := nvm.Format(m, 100); err != nil {
			t.Fatal(err)
		}
		again, err := nvm.Open(m)
		if err != nil {
			t.Fatalf("Open(reformatted) = %v", err)
		}
		if got := snapshot(again); len(got) != 0 {
			t.Errorf("after %d updates and Format: state = %q, want empty", updates, got)
		}
	}
}

// history is a sequence of different updates used by the crash tests.
var history = []change{
	{"a": "1"},
	{"b": strings.Repeat("B", 150), "c": "3"},
	{"a": "one", "b": del},
	{"big": strings.Repeat("G", 400)},
	{"big": del, "c": del, "d": "small"},
	{"a": del, "d": del},
	{"e": strings.Repeat("E", 63)},
}

// states returns the state after each prefix of history.
func states() []map[string]string {
	s := []map[string]string{{}}
	for _, c := range history {
		s = append(s, c.on(s[len(s)-1]))
	}
	return s
}

// atStep returns a Memory over a Tearing medium after history[:i].
func atStep(t *testing.T, i int) (*nvm.Memory, *nvmtest.Tearing, *nvm.MemMedium) {
	t.Helper()
	const capacity = 1024
	m := nvm.NewMemMedium(nvm.MediumSize(capacity))
	tm := nvmtest.NewTearing(m)
	if err := nvm.Format(tm, capacity); err != nil {
		t.Fatal(err)
	}
	mem, err := nvm.Open(tm)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range history[:i] {
		if err := mem.Update(c.apply); err != nil {
			t.Fatal(err)
		}
	}
	return mem, tm, m
}

// TestPowerCut cuts power at every write of every update of history, with
// several torn lengths, and checks the memory holds exactly the old or the
// new state after power-up, and works again.
func TestPowerCut(t *testing.T) {
	all := states()
	keeps := []int{0, 1, nvm.PageSize / 2, nvm.PageSize - 1, nvm.PageSize}
	for i, c := range history {
		old, new := all[i], all[i+1]
		// Count the writes this update takes.
		mem, tm, _ := atStep(t, i)
		w := tm.Writes()
		if err := mem.Update(c.apply); err != nil {
			t.Fatal(err)
		}
		writes := tm.Writes() - w
		if writes == 0 {
			t.Fatalf("update %d made no writes", i)
		}
		for n := 0; n <= writes; n++ {
			for _, keep := range keeps {
				if n == writes && keep != 0 {
					continue // n == writes is the cut at Sync
				}
				name := fmt.Sprintf("update%d/write%d/keep%d", i, n, keep)
				if n == writes {
					name = fmt.Sprintf("update%d/sync", i)
				}
				t.Run(name, func(t *testing.T) {
					mem, tm, m := atStep(t, i)
					if n == writes {
						tm.CutAtSync()
					} else {
						tm.CutAt(n, keep)
					}
					err := mem.Update(c.apply)
					if !errors.Is(err, nvm.ErrPowerLost) {
						t.Fatalf("Update(cut) = %v, want ErrPowerLost", err)
					}
					if !errors.Is(mem.Err(), nvm.ErrPowerLost) {
						t.Errorf("Err() = %v, want ErrPowerLost", mem.Err())
					}
					if got := snapshot(mem); !maps.Equal(got, old) {
						t.Errorf("state after cut = %q, want last committed %q", got, old)
					}
					if err := mem.Update(change{"x": "y"}.apply); !errors.Is(err, nvm.ErrPowerLost) {
						t.Errorf("Update after cut = %v, want ErrPowerLost", err)
					}

					// A fresh power-up of the medium.
					fresh, err := reopen(t, m)
					if err != nil {
						t.Fatalf("Open(after cut) = %v", err)
					}
					got := snapshot(fresh)
					if !maps.Equal(got, old) && !maps.Equal(got, new) {
						t.Fatalf("Open(after cut) state = %q, want %q or %q", got, old, new)
					}
					// Until the last page is written, the new image cannot be valid.
					if n < writes-1 && !maps.Equal(got, old) {
						t.Errorf("Open(after cut before last write) state = %q, want old %q", got, old)
					}
					if n == writes && !maps.Equal(got, new) {
						t.Errorf("Open(after cut at sync) state = %q, want new %q", got, new)
					}

					tm.Restore()
					if err := mem.Recover(); err != nil {
						t.Fatalf("Recover = %v", err)
					}
					if mem.Err() != nil {
						t.Errorf("Err() after Recover = %v, want nil", mem.Err())
					}
					if rec := snapshot(mem); !maps.Equal(rec, got) {
						t.Errorf("Recover state = %q, want %q as Open found", rec, got)
					}
					after := change{"after": "cut", "a": del}
					if err := mem.Update(after.apply); err != nil {
						t.Fatalf("Update after Recover = %v", err)
					}
					want := after.on(got)
					if rec := snapshot(mem); !maps.Equal(rec, want) {
						t.Errorf("state after Recover+Update = %q, want %q", rec, want)
					}
					again, err := reopen(t, m)
					if err != nil {
						t.Fatalf("Open(after Recover+Update) = %v", err)
					}
					if rec := snapshot(again); !maps.Equal(rec, want) {
						t.Errorf("Open(after Recover+Update) = %q, want %q", rec, want)
					}
				})
			}
		}
	}
}

// TestRepeatedCuts cuts power in every update of history in turn, without
// ever starting afresh, and checks the state always is one of the states
// history passes through.
func TestRepeatedCuts(t *testing.T) {
	mem, tm, _ := atStep(t, 0)
	want := map[string]string{}
	for i, c := range history {
		for n := 0; ; n++ {
			tm.CutAt(n, n%nvm.PageSize)
			err := mem.Update(c.apply)
			if err == nil {
				want = c.on(want)
				break // n is past the update's last write
			}
			tm.Restore()
			if err := mem.Recover(); err != nil {
				t.Fatalf("update %d cut at %d: Recover = %v", i, n, err)
			}
			got := snapshot(mem)
			if next := c.on(want); maps.Equal(got, next) {
				want = next
				break
			}
			if !maps.Equal(got, want) {
				t.Fatalf("update %d cut at %d: state = %q, want %q", i, n, got, want)
			}
		}
		tm.Restore()
	}
	if got := snapshot(mem); !maps.Equal(got, states()[len(history)]) {
		t.Errorf("final state = %q, want %q", got, states()[len(history)])
	}
}

// corruptSlot flips a byte inside the image in slot i (0 or 1).
func corruptSlot(t *testing.T, m *nvm.MemMedium, capacity, i, at int) {
	t.Helper()
	slot := (16 + capacity + 32 + nvm.PageSize - 1) / nvm.PageSize * nvm.PageSize
	off := int64(nvm.PageSize + i*slot + at)
	var b [1]byte
	m.ReadAt(b[:], off)
	b[0] ^= 0x01
	if _, err := m.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptSlots(t *testing.T) {
	const capacity = 256
	// After two updates slot A holds seq 3 ({a:2}), slot B seq 2 ({a:1}).
	prepare := func(t *testing.T) *nvm.MemMedium {
		mem, m := newMem(t, capacity)
		for _, v := range []string{"1", "2"} {
			if err := mem.Update(change{"a": v}.apply); err != nil {
				t.Fatal(err)
			}
		}
		return m
	}
	tests := []struct {
		name    string
		slots   []int
		at      int
		want    map[string]string
		wantErr error
	}{
		{"none", nil, 0, map[string]string{"a": "2"}, nil},
		{"current payload", []int{0}, 17, map[string]string{"a": "1"}, nil},
		{"older payload", []int{1}, 17, map[string]string{"a": "2"}, nil},
		{"current sequence", []int{0}, 11, map[string]string{"a": "1"}, nil},
		{"current checksum", []int{0}, 16 + 7 + 5, map[string]string{"a": "1"}, nil},
		{"both payloads", []int{0, 1}, 17, nil, nvm.ErrCorrupt},
		{"both magics", []int{0, 1}, 0, nil, nvm.ErrCorrupt},
		{"both lengths", []int{0, 1}, 15, nil, nvm.ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := prepare(t)
			for _, i := range tt.slots {
				corruptSlot(t, m, capacity, i, tt.at)
			}
			mem, err := nvm.Open(m)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("Open = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open = %v", err)
			}
			if got := snapshot(mem); !maps.Equal(got, tt.want) {
				t.Errorf("Open state = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRecoverCorrupt(t *testing.T) {
	const capacity = 64
	mem, m := newMem(t, capacity)
	if err := mem.Update(change{"a": "1"}.apply); err != nil {
		t.Fatal(err)
	}
	corruptSlot(t, m, capacity, 0, 0)
	corruptSlot(t, m, capacity, 1, 0)
	if err := mem.Recover(); !errors.Is(err, nvm.ErrCorrupt) {
		t.Errorf("Recover(corrupt) = %v, want ErrCorrupt", err)
	}
	if err := mem.Update(change{"b": "2"}.apply); err == nil {
		t.Errorf("Update after failed Recover = nil, want an error")
	}
	if got, want := snapshot(mem), map[string]string{"a": "1"}; !maps.Equal(got, want) {
		t.Errorf("state after failed Recover = %q, want %q", got, want)
	}
}

func TestOpenGarbage(t *testing.T) {
	valid := func() []byte {
		mem, m := newMem(t, 128)
		if err := mem.Update(change{"a": "1", "b": "2"}.apply); err != nil {
			t.Fatal(err)
		}
		return m.Bytes()
	}()
	withHeader := func(capacity uint32) []byte {
		b := bytes.Clone(valid)
		b[12], b[13], b[14], b[15] = byte(capacity>>24), byte(capacity>>16), byte(capacity>>8), byte(capacity)
		return b
	}
	tests := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"one byte", []byte{'c'}},
		{"zeros", make([]byte, 4096)},
		{"ones", bytes.Repeat([]byte{0xFF}, 4096)},
		{"pattern", bytes.Repeat([]byte("cardnvm\x00slot"), 400)},
		{"header only", valid[:nvm.PageSize]},
		{"truncated", valid[:len(valid)-1]},
		{"capacity changed", withHeader(64)},
		{"huge capacity", withHeader(0xFFFFFFFF)},
		{"version 2", func() []byte { b := bytes.Clone(valid); b[9] = 2; return b }()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := nvm.NewMemMedium(len(tt.b))
			m.WriteAt(tt.b, 0)
			if _, err := nvm.Open(m); !errors.Is(err, nvm.ErrCorrupt) {
				t.Errorf("Open(%s) = %v, want ErrCorrupt", tt.name, err)
			}
		})
	}
	// Every truncation of a valid medium.
	for n := range len(valid) {
		m := nvm.NewMemMedium(n)
		m.WriteAt(valid[:n], 0)
		if _, err := nvm.Open(m); !errors.Is(err, nvm.ErrCorrupt) {
			t.Errorf("Open(valid[:%d]) = %v, want ErrCorrupt", n, err)
		}
	}
}

func TestConcurrent(t *testing.T) {
	mem, _ := newMem(t, 1024)
	const workers, rounds = 4, 50
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for range rounds {
				err := mem.Update(func(tx *nvm.Tx) error {
					n := len(tx.Get("count"))
					tx.Put("count", make([]byte, n+1))
					tx.Put(fmt.Sprintf("w%d", w), []byte("x"))
					return nil
				})
				if err != nil {
					t.Errorf("Update = %v", err)
					return
				}
			}
		})
		wg.Go(func() {
			for range rounds {
				_ = mem.Get("count")
				_ = mem.Keys("w")
				_ = mem.Used()
				_ = mem.Err()
			}
		})
	}
	wg.Go(func() {
		for range rounds {
			if err := mem.Recover(); err != nil {
				t.Errorf("Recover = %v", err)
			}
		}
	})
	wg.Wait()
	if got := len(mem.Get("count")); got != workers*rounds {
		t.Errorf("count = %d, want %d", got, workers*rounds)
	}
}

func TestMemMedium(t *testing.T) {
	m := nvm.NewMemMedium(10)
	if _, err := m.WriteAt([]byte("abc"), 8); err == nil {
		t.Errorf("WriteAt(past end) = nil error")
	}
	if _, err := m.WriteAt([]byte("abc"), -1); err == nil {
		t.Errorf("WriteAt(negative) = nil error")
	}
	if n, err := m.WriteAt([]byte("abc"), 7); n != 3 || err != nil {
		t.Errorf("WriteAt(at end) = %d, %v, want 3, nil", n, err)
	}
	b := m.Bytes()
	b[7] = 'X'
	if got := string(m.Bytes()[7:]); got != "abc" {
		t.Errorf("Bytes()[7:] after changing a copy = %q, want abc", got)
	}
	p := make([]byte, 5)
	if n, err := m.ReadAt(p, 7); n != 3 || !errors.Is(err, io.EOF) {
		t.Errorf("ReadAt(past end) = %d, %v, want 3, EOF", n, err)
	}
}

// failing is a medium whose writes fail with err once armed.
type failing struct {
	*nvm.MemMedium
	err error
}

func (f *failing) WriteAt(p []byte, off int64) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	return f.MemMedium.WriteAt(p, off)
}

func TestIOErrorCountsAsPowerLoss(t *testing.T) {
	f := &failing{MemMedium: nvm.NewMemMedium(nvm.MediumSize(64))}
	if err := nvm.Format(f, 64); err != nil {
		t.Fatal(err)
	}
	mem, err := nvm.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	eio := errors.New("input/output error")
	f.err = eio
	err = mem.Update(change{"a": "1"}.apply)
	if !errors.Is(err, nvm.ErrPowerLost) || !errors.Is(err, eio) {
		t.Errorf("Update(failing medium) = %v, want ErrPowerLost and %v", err, eio)
	}
	if got := mem.Err(); got != err {
		t.Errorf("Err() = %v, want %v", got, err)
	}
	f.err = nil
	if err := mem.Recover(); err != nil {
		t.Fatalf("Recover = %v", err)
	}
	if err := mem.Update(change{"a": "1"}.apply); err != nil {
		t.Errorf("Update after Recover = %v", err)
	}
}
