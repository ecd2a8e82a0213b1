package purchase_test

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"cardlink/internal/server/purchase"
)

// TestNewIDOrdered: IDs made in later milliseconds sort after earlier
// ones, as strings and as transaction ids; each starts with its time; all
// are distinct, also within one millisecond; each parses as a purchase ID.
func TestNewIDOrdered(t *testing.T) {
	base := time.Date(2026, 11, 29, 2, 0, 0, 0, time.UTC)
	seen := map[string]bool{}
	var prev string
	for i := range 2000 {
		now := base.Add(time.Duration(i/10) * time.Millisecond) // ten in each millisecond
		id, err := purchase.NewID(now, rand.Reader)
		if err != nil {
			t.Fatalf("NewID(%v) = %v", now, err)
		}
		if seen[id] {
			t.Fatalf("NewID made %s twice", id)
		}
		seen[id] = true
		tid, err := purchase.TransactionID(id)
		if err != nil {
			t.Fatalf("TransactionID(NewID()) = %v", err)
		}
		if got, ok := purchase.PurchaseID(tid[:]); !ok || got != id {
			t.Fatalf("PurchaseID(TransactionID(%s)) = %s, %v", id, got, ok)
		}
		if ms := binary.BigEndian.Uint64(tid[:8]) >> 16; ms != uint64(now.UnixMilli()) {
			t.Fatalf("NewID(%v) = %s starts with %d ms, want %d", now, id, ms, now.UnixMilli())
		}
		if i%10 == 0 && prev != "" && (id <= prev || !strings.HasPrefix(id, "pur_")) {
			t.Fatalf("NewID(%v) = %s, not after %s of the millisecond before", now, id, prev)
		}
		prev = id
	}
}

// TestNewIDRandom: the 80 bits after the time come from the reader, and
// a failing reader or a time out of range is an error.
func TestNewIDRandom(t *testing.T) {
	now := time.UnixMilli(0x0123456789ab)
	id, err := purchase.NewID(now, bytes.NewReader(bytes.Repeat([]byte{0xee}, 10)))
	if want := "pur_0123456789abeeeeeeeeeeeeeeeeeeee"; err != nil || id != want {
		t.Errorf("NewID(0x0123456789ab ms, 0xee…) = %s, %v; want %s", id, err, want)
	}
	boom := errors.New("boom")
	if _, err := purchase.NewID(now, iotest.ErrReader(boom)); !errors.Is(err, boom) {
		t.Errorf("NewID(failing reader) = %v, want %v", err, boom)
	}
	if _, err := purchase.NewID(now, bytes.NewReader(make([]byte, 9))); err == nil {
		t.Error("NewID(9 random bytes) = nil error, want one")
	}
	for _, bad := range []time.Time{time.UnixMilli(-1), time.UnixMilli(1 << 48)} {
		if id, err := purchase.NewID(bad, rand.Reader); err == nil {
			t.Errorf("NewID(%v) = %s, want an error", bad, id)
		}
	}
}
