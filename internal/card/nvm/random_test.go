package nvm_test

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"strings"
	"testing"

	"cardlink/internal/card/nvm"
)

// TestRandomUpdatesWithCuts runs random transactions (values growing and
// shrinking, keys coming and going, some over capacity) on one Memory,
// cutting power at a random write or at the sync of about one in four,
// and checks after every step that the Memory, and every so often a fresh
// Open of its medium, holds exactly the model's state. It exercises the
// reuse of image buffers across commits, failed commits and Recover.
func TestRandomUpdatesWithCuts(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	mem, tm, m := atStep(t, 0) // 1024 bytes, formatted, nothing stored
	want := map[string]string{}
	var cuts, full int
	for step := range 600 {
		c := change{}
		for range 1 + rng.IntN(3) {
			k := fmt.Sprintf("k%02d", rng.IntN(12))
			if _, ok := want[k]; ok && rng.IntN(3) == 0 {
				c[k] = del
			} else {
				c[k] = strings.Repeat(string(rune('a'+step%26)), rng.IntN(160))
			}
		}
		next := c.on(want)
		cut := rng.IntN(4) == 0
		if cut {
			if rng.IntN(5) == 0 {
				tm.CutAtSync()
			} else {
				tm.CutAt(rng.IntN(20), rng.IntN(nvm.PageSize+1))
			}
		}
		err := mem.Update(c.apply)
		switch {
		case err == nil:
			want = next
		case errors.Is(err, nvm.ErrFull):
			full++
		case errors.Is(err, nvm.ErrPowerLost):
			cuts++
			tm.Restore()
			if err := mem.Recover(); err != nil {
				t.Fatalf("step %d: Recover = %v", step, err)
			}
			switch got := snapshot(mem); {
			case maps.Equal(got, next):
				want = next // the cut came after the last page
			case !maps.Equal(got, want):
				t.Fatalf("step %d: state after cut = %q, want %q or %q", step, got, want, next)
			}
		default:
			t.Fatalf("step %d: Update = %v", step, err)
		}
		tm.Restore() // a cut past the update's last write stays armed otherwise
		if got := snapshot(mem); !maps.Equal(got, want) {
			t.Fatalf("step %d: state = %q, want %q", step, got, want)
		}
		if step%25 == 0 {
			fresh, err := reopen(t, m)
			if err != nil {
				t.Fatalf("step %d: Open = %v", step, err)
			}
			if got := snapshot(fresh); !maps.Equal(got, want) {
				t.Fatalf("step %d: Open state = %q, want %q", step, got, want)
			}
		}
	}
	if cuts < 50 || full == 0 {
		t.Errorf("%d cuts and %d transactions over capacity in 600 steps; the test means to cover both", cuts, full)
	}
}
