package sqlite

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// TestPartialIndexPlans: the partial indexes of migration 0008 serve the
// statements of PaidPurchase and AuthorizedPurchases (EXPLAIN QUERY PLAN
// names them and scans no table). SQLite takes a partial index only when
// the query's WHERE names its status literally: with a bound status the
// plan is a scan of every purchase.
func TestPartialIndexPlans(t *testing.T) {
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "plan.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, tt := range []struct {
		name, query, index string
		args               []any
	}{
		{"PaidPurchase", paidQuery, "purchases_paid_card_reference", []any{"4000001234567899", "12345678"}},
		{"AuthorizedPurchases", authorizedQuery, "purchases_authorized_updated", []any{int64(1), 10}},
	} {
		rows, err := s.r.Query(`EXPLAIN QUERY PLAN `+tt.query, tt.args...)
		if err != nil {
			t.Fatalf("EXPLAIN QUERY PLAN (%s) = %v", tt.name, err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		if err := rows.Close(); err != nil {
			t.Fatal(err)
		}
		got := strings.Join(plan, "; ")
		if !strings.Contains(got, "INDEX "+tt.index+" ") || strings.Contains(got, "SCAN ") {
			t.Errorf("plan of %s = %q; want a search of %s, no scan", tt.name, got, tt.index)
		}
	}
}
