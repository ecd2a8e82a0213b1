package nvm_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"cardlink/internal/card/nvm"
)

// fill stores about 4 KiB of records: 64 records of 64 bytes each.
func fill(b *testing.B, mem *nvm.Memory) {
	b.Helper()
	err := mem.Update(func(tx *nvm.Tx) error {
		for i := range 64 {
			tx.Put(fmt.Sprintf("wallet/log/%02d", i), []byte(strings.Repeat("r", 64-5-13)))
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

func benchmarkUpdate(b *testing.B, mem *nvm.Memory) {
	fill(b, mem)
	b.ReportAllocs()
	var ctr [4]byte
	for b.Loop() {
		ctr[3]++
		if err := mem.Update(func(tx *nvm.Tx) error {
			tx.Put("wallet/counter", ctr[:])
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUpdateMem commits one small Put to a MemMedium holding about
// 4 KiB of records.
func BenchmarkUpdateMem(b *testing.B) {
	mem, _ := newMem(b, 8192)
	benchmarkUpdate(b, mem)
}

// BenchmarkUpdateMemKeys is BenchmarkUpdateMem with a transaction that
// adds one key and deletes another (a log record replaced by a new one),
// so that the key set changes at every update.
func BenchmarkUpdateMemKeys(b *testing.B) {
	mem, _ := newMem(b, 8192)
	fill(b, mem)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		old, next := fmt.Sprintf("wallet/log/%02d", i%64), fmt.Sprintf("wallet/log/%02d", i%64+64)
		if i%128 >= 64 {
			old, next = next, old
		}
		if err := mem.Update(func(tx *nvm.Tx) error {
			tx.Delete(old)
			tx.Put(next, []byte(strings.Repeat("n", 46)))
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkUpdateFile is BenchmarkUpdateMem on a file, with fsync.
func BenchmarkUpdateFile(b *testing.B) {
	mem, err := nvm.CreateFile(filepath.Join(b.TempDir(), "card.nvm"), 8192)
	if err != nil {
		b.Fatal(err)
	}
	defer mem.Close()
	benchmarkUpdate(b, mem)
}

// BenchmarkFsyncFloor is the physical floor under BenchmarkUpdateFile:
// one write of an image the same size (about 4 KiB) to a file in the same
// kind of directory, and one fsync. UpdateFile / FsyncFloor is the cost of
// the A/B image, page writes and checksum on top of what the disk must do.
func BenchmarkFsyncFloor(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "floor"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	img := make([]byte, 4200)
	b.ReportAllocs()
	for b.Loop() {
		img[0]++
		if _, err := f.WriteAt(img, 0); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGet reads one record of a memory holding about 4 KiB.
func BenchmarkGet(b *testing.B) {
	mem, _ := newMem(b, 8192)
	fill(b, mem)
	b.ReportAllocs()
	for b.Loop() {
		if v := mem.Get("wallet/log/42"); len(v) != 46 {
			b.Fatalf("Get = %d bytes, want 46", len(v))
		}
	}
}
