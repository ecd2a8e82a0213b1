package nvm_test

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"strings"
	"testing"

	"cardlink/internal/card/nvm"
)

// goldenHistory is the history of testdata/golden-v1.nvm: 24 updates of
// a memory of capacity 512 (puts that grow and shrink values, deletes, keys
// that come and go). The file was written by the package as it was at
// commit 7194bc8, before updates patched the image, running exactly this
// history; it must never be regenerated with the current code.
func goldenHistory() []func(tx *nvm.Tx) error {
	var h []func(tx *nvm.Tx) error
	for i := range 24 {
		h = append(h, func(tx *nvm.Tx) error {
			tx.Put(fmt.Sprintf("wallet/log/%02d", i%5), []byte(strings.Repeat(string(rune('a'+i)), 3*i%40)))
			tx.Put("wallet/atc", []byte{0, 0, 0, byte(i)})
			if i%4 == 3 {
				tx.Delete(fmt.Sprintf("wallet/log/%02d", (i+2)%5))
			}
			if i%6 == 0 {
				tx.Put(fmt.Sprintf("piv/%d", i), nil)
			}
			if i == 20 {
				tx.Delete("piv/0")
			}
			return nil
		})
	}
	return h
}

// TestGoldenMedium checks the on-medium format did not change: the same
// history gives, byte for byte, the medium the earlier code wrote (both
// slots, so the last two images), and the current code opens that medium
// and keeps updating it.
func TestGoldenMedium(t *testing.T) {
	golden, err := os.ReadFile("testdata/golden-v1.nvm")
	if err != nil {
		t.Fatal(err)
	}
	const capacity = 512
	mem, m := newMem(t, capacity)
	for i, u := range goldenHistory() {
		if err := mem.Update(u); err != nil {
			t.Fatalf("update %d: %v", i, err)
		}
	}
	if got := m.Bytes(); !bytes.Equal(got, golden) {
		for i := range min(len(got), len(golden)) {
			if got[i] != golden[i] {
				t.Fatalf("medium differs from testdata/golden-v1.nvm first at byte %d (%d bytes, want %d)", i, len(got), len(golden))
			}
		}
		t.Fatalf("medium is %d bytes, want %d", len(got), len(golden))
	}

	old := nvm.NewMemMedium(len(golden))
	old.WriteAt(golden, 0)
	opened, err := nvm.Open(old)
	if err != nil {
		t.Fatalf("Open(golden) = %v", err)
	}
	want := snapshot(mem)
	if got := snapshot(opened); !maps.Equal(got, want) || opened.Used() != mem.Used() {
		t.Fatalf("Open(golden) = %q (used %d), want %q (used %d)", got, opened.Used(), want, mem.Used())
	}
	c := change{"wallet/atc": "next", "wallet/log/02": del, "new": "key"}
	if err := opened.Update(c.apply); err != nil {
		t.Fatalf("Update on the golden medium = %v", err)
	}
	again, err := nvm.Open(old)
	if err != nil {
		t.Fatalf("Open(golden after an update) = %v", err)
	}
	if got := snapshot(again); !maps.Equal(got, c.on(want)) {
		t.Errorf("Open(golden after an update) = %q, want %q", got, c.on(want))
	}
}
