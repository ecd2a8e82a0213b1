package nvm_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"cardlink/internal/card/nvm"
)

// countingMemo returns a Memo of key that decodes a value to its string
// ("<absent>" for an absent key, an error for "bad") and counts decodes.
func countingMemo(key string) (*nvm.Memo[string], *atomic.Int32) {
	var n atomic.Int32
	m := nvm.NewMemo(key, func(b []byte) (string, error) {
		n.Add(1)
		switch {
		case b == nil:
			return "<absent>", nil
		case string(b) == "bad":
			return "", errors.New("bad value")
		}
		if len(b) > 0 {
			b[0] ^= 0xFF // decode owns its copy; this must not reach the cache's
		}
		return string(b), nil
	})
	return m, &n
}

func TestMemo(t *testing.T) {
	mem, _ := newMem(t, 256)
	memo, decodes := countingMemo("k")
	step := 0
	expect := func(want string, wantErr bool, wantDecodes int32) {
		t.Helper()
		step++
		got, err := memo.Get(mem)
		if (err != nil) != wantErr || got != want {
			t.Errorf("step %d: Get = %q, %v, want %q (error %v)", step, got, err, want, wantErr)
		}
		if n := decodes.Load(); n != wantDecodes {
			t.Errorf("step %d: %d decodes in all, want %d", step, n, wantDecodes)
		}
	}
	flip := func(s string) string { return string([]byte{s[0] ^ 0xFF}) + s[1:] }
	put := func(k, v string) {
		t.Helper()
		if err := mem.Update(change{k: v}.apply); err != nil {
			t.Fatal(err)
		}
	}

	expect("<absent>", false, 1)
	expect("<absent>", false, 1) // cached
	put("k", "abcd")
	expect(flip("abcd"), false, 2)
	expect(flip("abcd"), false, 2)
	put("other", "x") // another key: the image changes, the record does not
	expect(flip("abcd"), false, 2)
	put("k", "abce") // same length, one byte differs
	expect(flip("abce"), false, 3)
	put("k", "abce") // rewritten with the same bytes
	expect(flip("abce"), false, 3)
	put("k", "") // present but empty is not absent
	if got, _ := memo.Get(mem); decodes.Load() != 4 {
		t.Errorf("empty value: Get = %q after %d decodes, want a new decode", got, decodes.Load())
	}
	put("k", "bad")
	expect("", true, 5)
	expect("", true, 5) // errors are cached too
	put("k", del)
	expect("<absent>", false, 6)

	// A transaction sees its own writes; the memo sees the committed state.
	mem.Update(func(tx *nvm.Tx) error {
		tx.Put("k", []byte("uncommitted"))
		expect("<absent>", false, 6)
		return errors.New("rolled back")
	})
	expect("<absent>", false, 6)
}

// TestMemoPerMemory checks a Memo keeps one value per Memory.
func TestMemoPerMemory(t *testing.T) {
	a, _ := newMem(t, 64)
	b, _ := newMem(t, 64)
	a.Update(change{"k": "a"}.apply)
	b.Update(change{"k": "b"}.apply)
	memo := nvm.NewMemo("k", func(v []byte) (string, error) { return string(v), nil })
	for range 2 {
		if got, _ := memo.Get(a); got != "a" {
			t.Errorf("Get(a) = %q, want a", got)
		}
		if got, _ := memo.Get(b); got != "b" {
			t.Errorf("Get(b) = %q, want b", got)
		}
	}
}

// TestMemoAfterRecover checks the memo follows a record changed behind the
// Memory's back: another Memory commits to the same medium, and Recover
// re-reads it.
func TestMemoAfterRecover(t *testing.T) {
	mem, m := newMem(t, 128)
	mem.Update(change{"k": "old"}.apply)
	memo := nvm.NewMemo("k", func(v []byte) (string, error) { return string(v), nil })
	if got, _ := memo.Get(mem); got != "old" {
		t.Fatalf("Get = %q, want old", got)
	}
	other, err := nvm.Open(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Update(change{"k": "new"}.apply); err != nil {
		t.Fatal(err)
	}
	if got, _ := memo.Get(mem); got != "old" {
		t.Errorf("Get before Recover = %q, want old (the committed state mem serves)", got)
	}
	if err := mem.Recover(); err != nil {
		t.Fatal(err)
	}
	if got, _ := memo.Get(mem); got != "new" {
		t.Errorf("Get after Recover = %q, want new", got)
	}
}

// TestMemoConcurrent runs memo and plain reads against updates that keep
// rewriting the record (with other records around it, so its bytes move
// in the reused buffers): every answer must be a value that was committed,
// whole. Run with -race.
func TestMemoConcurrent(t *testing.T) {
	mem, _ := newMem(t, 4096)
	value := func(i int) string { return fmt.Sprintf("%d:%s", i, strings.Repeat(string(rune('a'+i%26)), i%50)) }
	valid := func(s string) bool {
		var i int
		var rest string
		if _, err := fmt.Sscanf(s, "%d:", &i); err != nil {
			return false
		}
		_, rest, _ = strings.Cut(s, ":")
		return s == value(i) && len(rest) == i%50
	}
	mem.Update(change{"k": value(0), "a": "x", "z": "y"}.apply)
	memo := nvm.NewMemo("k", func(v []byte) (string, error) { return string(v), nil })
	const rounds = 300
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 1; i <= rounds; i++ {
			c := change{"k": value(i), "a": strings.Repeat("x", i%7)}
			if i%3 == 0 {
				c["m"+fmt.Sprint(i%5)] = "moved"
			}
			if err := mem.Update(c.apply); err != nil {
				t.Errorf("Update = %v", err)
				return
			}
		}
	})
	for range 3 {
		wg.Go(func() {
			for range rounds {
				got, err := memo.Get(mem)
				if err != nil || !valid(got) {
					t.Errorf("memo Get = %q, %v, want a committed value", got, err)
					return
				}
				if got := string(mem.Get("k")); !valid(got) {
					t.Errorf("Get = %q, want a committed value", got)
					return
				}
				if ks := mem.Keys(""); len(ks) < 3 {
					t.Errorf("Keys = %q, want at least a, k, z", ks)
					return
				}
			}
		})
	}
	wg.Wait()
	if got, _ := memo.Get(mem); got != value(rounds) {
		t.Errorf("final memo Get = %q, want %q", got, value(rounds))
	}
	if got := mem.Get("k"); !bytes.Equal(got, []byte(value(rounds))) {
		t.Errorf("final Get = %q, want %q", got, value(rounds))
	}
}
