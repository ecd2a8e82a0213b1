package postgres

import (
	"context"
	"strings"
	"testing"
	"time"

	"cardlink/internal/store/postgres/pgtest"
)

// TestPartialIndexPlans: the partial indexes of migration 0008 can serve
// the statements of PaidPurchase and AuthorizedPurchases under a generic
// plan (the plan a prepared statement settles on): prepared as they are,
// with sequential scans disabled, the plan uses the index. PostgreSQL
// cannot prove a partial index's predicate from a status given as a
// parameter; these statements name it literally.
func TestPartialIndexPlans(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Open(ctx, pgtest.Schema(t, pgtest.DSN(t), "cardlink_plan_", 1))
	if err != nil {
		t.Fatalf("Open = %v", err)
	}
	defer s.Close()
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	for _, q := range []string{`SET plan_cache_mode = force_generic_plan`, `SET enable_seqscan = off`} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	defer conn.Exec(context.Background(), `DEALLOCATE ALL; RESET ALL`)
	for _, tt := range []struct {
		name, query, index, args string
	}{
		{"PaidPurchase", paidQuery, "purchases_paid_card_reference", `'4000001234567899', '12345678'`},
		{"AuthorizedPurchases", authorizedQuery, "purchases_authorized_updated", `now(), 10`},
	} {
		if _, err := conn.Exec(ctx, `PREPARE plan_`+tt.name+` AS `+tt.query); err != nil {
			t.Fatalf("PREPARE (%s) = %v", tt.name, err)
		}
		rows, err := conn.Query(ctx, `EXPLAIN (COSTS OFF) EXECUTE plan_`+tt.name+`(`+tt.args+`)`)
		if err != nil {
			t.Fatalf("EXPLAIN (%s) = %v", tt.name, err)
		}
		var plan []string
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, strings.TrimSpace(line))
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		got := strings.Join(plan, "; ")
		if !strings.Contains(got, "using "+tt.index+" ") || strings.Contains(got, "Seq Scan") {
			t.Errorf("generic plan of %s = %q; want a scan of index %s", tt.name, got, tt.index)
		}
	}
}
