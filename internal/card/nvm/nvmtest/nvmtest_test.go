package nvmtest_test

import (
	"bytes"
	"errors"
	"testing"

	"cardlink/internal/card/nvm"
	"cardlink/internal/card/nvm/nvmtest"
)

func TestTearing(t *testing.T) {
	tests := []struct {
		name   string
		cut    func(tm *nvmtest.Tearing)
		want   string // medium contents after writing "aaaa", "bbbb", "cccc" at 0, 4, 8 and a Sync
		failAt int    // index of the first failing call (3 is the Sync); -1 if none
	}{
		{"no cut", func(*nvmtest.Tearing) {}, "aaaabbbbcccc", -1},
		{"first write keep 0", func(tm *nvmtest.Tearing) { tm.CutAt(0, 0) }, "............", 0},
		{"second write keep 1", func(tm *nvmtest.Tearing) { tm.CutAt(1, 1) }, "aaaab.......", 1},
		{"third write keep 3", func(tm *nvmtest.Tearing) { tm.CutAt(2, 3) }, "aaaabbbbccc.", 2},
		{"keep beyond length", func(tm *nvmtest.Tearing) { tm.CutAt(2, 100) }, "aaaabbbbcccc", 2},
		{"past the writes", func(tm *nvmtest.Tearing) { tm.CutAt(3, 0) }, "aaaabbbbcccc", -1},
		{"sync", func(tm *nvmtest.Tearing) { tm.CutAtSync() }, "aaaabbbbcccc", 3},
		{"restored", func(tm *nvmtest.Tearing) { tm.CutAt(0, 0); tm.Restore() }, "aaaabbbbcccc", -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := nvm.NewMemMedium(12)
			m.WriteAt(bytes.Repeat([]byte("."), 12), 0)
			tm := nvmtest.NewTearing(m)
			tm.WriteAt([]byte("...."), 0) // counted before the cut is arranged
			tt.cut(tm)
			failed := -1
			for i, s := range []string{"aaaa", "bbbb", "cccc"} {
				_, err := tm.WriteAt([]byte(s), int64(4*i))
				if err != nil && failed < 0 {
					failed = i
				}
				if err != nil && !errors.Is(err, nvm.ErrPowerLost) {
					t.Errorf("WriteAt #%d = %v, want ErrPowerLost", i, err)
				}
				if (err == nil) != (failed < 0) {
					t.Errorf("WriteAt #%d = %v after an earlier failure", i, err)
				}
			}
			if err := tm.Sync(); err != nil {
				if failed < 0 {
					failed = 3
				}
				if !errors.Is(err, nvm.ErrPowerLost) {
					t.Errorf("Sync = %v, want ErrPowerLost", err)
				}
			} else if failed >= 0 {
				t.Errorf("Sync = nil after a failed write")
			}
			if failed != tt.failAt {
				t.Errorf("first failing call = %d, want %d", failed, tt.failAt)
			}
			if got := tm.PowerLost(); got != (tt.failAt >= 0) {
				t.Errorf("PowerLost() = %v, want %v", got, tt.failAt >= 0)
			}
			got := make([]byte, 12)
			if _, err := tm.ReadAt(got, 0); err != nil {
				t.Errorf("ReadAt after the cut = %v", err)
			}
			if string(got) != tt.want {
				t.Errorf("contents = %q, want %q", got, tt.want)
			}
			if w := tm.Writes(); w != 4 {
				t.Errorf("Writes() = %d, want 4", w)
			}
			tm.Restore()
			if _, err := tm.WriteAt([]byte("z"), 0); err != nil {
				t.Errorf("WriteAt after Restore = %v", err)
			}
			if err := tm.Sync(); err != nil {
				t.Errorf("Sync after Restore = %v", err)
			}
		})
	}
}
