package ledger

import (
	"bytes"
	"encoding/binary"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"cardlink/internal/money"
)

// transferFrom decodes fuzz input: key, memo, then legs of one account
// byte and an 8-byte amount each.
func transferFrom(key, memo string, legs []byte) Transfer {
	t := Transfer{Key: key, Currency: money.Currency("EUR"), Memo: memo}
	for len(legs) >= 9 {
		t.Legs = append(t.Legs, Leg{Account: string(rune('a' + legs[0]%8)), Amount: int64(binary.BigEndian.Uint64(legs[1:9]))})
		legs = legs[9:]
	}
	return t
}

// FuzzPrepare: whatever prepare accepts has two or more non-zero legs on
// distinct accounts summing to zero, and its digest does not depend on
// the order of the legs.
func FuzzPrepare(f *testing.F) {
	leg := func(acct byte, amount int64) []byte {
		return binary.BigEndian.AppendUint64([]byte{acct}, uint64(amount))
	}
	f.Add("k", "memo", slices.Concat(leg(0, -5), leg(1, 5)))
	f.Add("k", "", slices.Concat(leg(0, -5), leg(1, 3), leg(2, 2)))
	f.Add("k", "", slices.Concat(leg(0, 1<<62), leg(1, 1<<62), leg(2, -(1<<62)), leg(3, -(1<<62))))
	f.Add("", "x", slices.Concat(leg(0, -1), leg(0, 1)))
	f.Add("k\xff", "x\x00", slices.Concat(leg(0, -5), leg(1, 5)))
	f.Fuzz(func(t *testing.T, key, memo string, legs []byte) {
		tr := transferFrom(key, memo, legs)
		st, err := prepare(tr)
		if err != nil {
			return
		}
		if !utf8.ValidString(st.Key+st.Memo) || strings.ContainsRune(st.Key+st.Memo, 0) {
			t.Fatalf("prepare(%+v) accepted a key or memo not UTF-8 or holding NUL", tr)
		}
		if len(st.Legs) < 2 {
			t.Fatalf("prepare(%+v) accepted %d legs", tr, len(st.Legs))
		}
		var sum int64
		for i, l := range st.Legs {
			if l.Amount == 0 || (i > 0 && st.Legs[i-1].Account >= l.Account) {
				t.Fatalf("prepare(%+v) = legs %+v, want non-zero, distinct, in order", tr, st.Legs)
			}
			sum += l.Amount
		}
		if sum != 0 {
			t.Fatalf("prepare(%+v): legs sum to %d, want 0", tr, sum)
		}
		rev := tr
		rev.Legs = slices.Clone(tr.Legs)
		slices.Reverse(rev.Legs)
		st2, err := prepare(rev)
		if err != nil || !bytes.Equal(st2.Digest, st.Digest) {
			t.Fatalf("prepare(reversed legs) = %x, %v; want %x, nil", st2.Digest, err, st.Digest)
		}
	})
}
