package ledgerplan

import (
	"errors"
	"math"
	"slices"
	"testing"
	"time"

	"cardlink/internal/store"
)

func TestApply(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	accts := func() map[string]*Account {
		return map[string]*Account{
			"a":   {Currency: "EUR", Locked: 100, Balance: 100},
			"b":   {Currency: "EUR"},
			"f":   {Currency: "EUR", Limit: math.MinInt64 / 2},
			"usd": {Currency: "USD"},
			"max": {Currency: "EUR", Locked: math.MaxInt64 - 1, Balance: math.MaxInt64 - 1},
		}
	}
	pay := func(key, from, to string, n int64) store.Transfer {
		return store.Transfer{Key: key, Currency: "EUR", Legs: []store.Leg{{Account: from, Amount: -n}, {Account: to, Amount: n}}}
	}
	tests := []struct {
		name     string
		ts       []store.Transfer
		wantErr  []error // per transfer; nil means posted
		balances map[string]int64
		touched  []string
	}{
		{"two payments within the limit", []store.Transfer{pay("k1", "a", "b", 60), pay("k2", "a", "b", 40)},
			[]error{nil, nil}, map[string]int64{"a": 0, "b": 100}, []string{"a", "b"}},
		{"the second breaks the limit and is refused alone", []store.Transfer{pay("k1", "a", "b", 60), pay("k2", "a", "b", 41), pay("k3", "b", "a", 10)},
			[]error{nil, store.ErrLimit, nil}, map[string]int64{"a": 50, "b": 50}, []string{"a", "b"}},
		{"unknown account", []store.Transfer{pay("k1", "a", "nobody", 1)},
			[]error{store.ErrNotFound}, map[string]int64{"a": 100}, nil},
		{"other currency", []store.Transfer{pay("k1", "a", "usd", 1)},
			[]error{store.ErrCurrency}, map[string]int64{"a": 100, "usd": 0}, nil},
		{"overflow", []store.Transfer{pay("k1", "f", "max", 2)},
			[]error{errOverflow}, map[string]int64{"max": math.MaxInt64 - 1}, nil},
		{"funding below zero", []store.Transfer{pay("k1", "f", "b", 1000)},
			[]error{nil}, map[string]int64{"f": -1000, "b": 1000}, []string{"f", "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			as := accts()
			var p Plan
			var refused []int64
			entries := 0
			for i, tr := range tt.ts {
				id := int64(i + 1)
				r := p.Apply(tr, id, now, as)
				want := tt.wantErr[i]
				switch {
				case want == nil && r.Err != nil:
					t.Errorf("Apply(%s) = %v, want posted", tr.Key, r.Err)
				case want == nil && (r.Posted.ID != id || r.Posted.Key != tr.Key || !r.Posted.Time.Equal(now)):
					t.Errorf("Apply(%s) = %+v, want posted as %d", tr.Key, r.Posted, id)
				case want == errOverflow && (r.Err == nil || errors.Is(r.Err, store.ErrLimit)):
					t.Errorf("Apply(%s) = %v, want an overflow refusal", tr.Key, r.Err)
				case want != nil && want != errOverflow && !errors.Is(r.Err, want):
					t.Errorf("Apply(%s) = %v, want %v", tr.Key, r.Err, want)
				}
				if want != nil {
					refused = append(refused, id)
				} else {
					entries += len(tr.Legs)
				}
			}
			for id, b := range tt.balances {
				if as[id].Balance != b {
					t.Errorf("balance of %s = %d, want %d", id, as[id].Balance, b)
				}
			}
			if !slices.Equal(p.Refused, refused) {
				t.Errorf("Refused = %v, want %v", p.Refused, refused)
			}
			if !slices.Equal(p.Touched, tt.touched) {
				t.Errorf("Touched = %v, want %v", p.Touched, tt.touched)
			}
			if len(p.Entries) != entries {
				t.Errorf("%d entries, want %d", len(p.Entries), entries)
			}
			if len(p.Entries) > 0 {
				last := p.Entries[len(p.Entries)-1]
				if last.Balance != as[last.Account].Balance {
					t.Errorf("last entry %+v: balance %d, want the account's final %d", last, last.Balance, as[last.Account].Balance)
				}
			}
		})
	}
}

// errOverflow marks the refusal that has no sentinel.
var errOverflow = errors.New("overflow")
