package postgres_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"cardlink/internal/store"
	"cardlink/internal/store/postgres"
	"cardlink/internal/store/postgres/pgtest"
	"cardlink/internal/store/storetest"
)

// schemas maps each test to its DSN: the first open creates a fresh
// schema, later opens share it; cleanup drops it.
var schemas sync.Map // testing.TB → string

// newSchema creates an empty schema for t, dropped when t ends, and
// returns a DSN that uses it, with two pooled connections: enough for the
// races of two goroutines on one Store.
func newSchema(t testing.TB) string {
	t.Helper()
	return pgtest.Schema(t, pgtest.DSN(t), "cardlink_test_", 2)
}

func open(t testing.TB) store.Store {
	t.Helper()
	dsn, ok := schemas.Load(t)
	if !ok {
		dsn = newSchema(t)
		schemas.Store(t, dsn)
		t.Cleanup(func() { schemas.Delete(t) })
	}
	s, err := postgres.Open(context.Background(), dsn.(string))
	if err != nil {
		t.Fatalf("Open = %v", err)
	}
	// Registered after the schema's cleanup, so it runs before it.
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	pgtest.DSN(t)
	storetest.Run(t, open)
}

func TestOpenURI(t *testing.T) {
	ctx := context.Background()
	dsn := newSchema(t)
	s, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatalf("store.Open(postgres DSN) = %v", err)
	}
	defer s.Close()
	if _, ok := s.(*postgres.Store); !ok {
		t.Fatalf("store.Open(postgres://…) = %T, want *postgres.Store", s)
	}
}

// TestOpenRefusals needs no server: a DSN that does not parse fails
// without echoing it (it may hold a password).
func TestOpenRefusals(t *testing.T) {
	const secret = "hunter2"
	_, err := postgres.Open(context.Background(), "postgres://u:"+secret+"@127.0.0.1:bad port/db")
	if err == nil || strings.Contains(err.Error(), secret) {
		t.Fatalf("Open(bad DSN) = %v, want an error without the password", err)
	}
}

func TestSchemaVersion(t *testing.T) {
	s := open(t).(*postgres.Store)
	v, err := s.SchemaVersion(context.Background())
	if err != nil || v != 8 {
		t.Fatalf("SchemaVersion = %d, %v; want 8, nil", v, err)
	}
}

// TestConcurrentOpen: instances starting at once on an empty schema apply
// each migration once (the advisory lock), and all succeed.
func TestConcurrentOpen(t *testing.T) {
	dsn := newSchema(t)
	const n = 4
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			s, err := postgres.Open(context.Background(), dsn)
			if err == nil {
				s.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Open #%d = %v, want nil", i, err)
		}
	}
}

func TestMigrations(t *testing.T) {
	s := open(t).(*postgres.Store)
	storetest.RunMigrations(t, storetest.Migrator{
		Migrate:  func(fsys fstest.MapFS) error { return postgres.Migrate(s, fsys) },
		HasTable: func(name string) (bool, error) { return postgres.HasTable(s, name) },
		Version:  func() (int, error) { return s.SchemaVersion(context.Background()) },
	})
}

func TestUpgrade(t *testing.T) {
	pgtest.DSN(t)
	storetest.RunUpgrade(t, storetest.Upgrader{
		Open:    open,
		Exec:    func(s store.Store, q string) error { return postgres.Exec(s.(*postgres.Store), q) },
		Version: func(s store.Store) (int, error) { return s.(*postgres.Store).SchemaVersion(context.Background()) },
	})
}

func BenchmarkTakeChallenge(b *testing.B)   { storetest.BenchTakeChallenge(b, open) }
func BenchmarkAdvanceCounter(b *testing.B)  { storetest.BenchAdvanceCounter(b, open) }
func BenchmarkPurchase(b *testing.B)        { storetest.BenchPurchase(b, open) }
func BenchmarkApprovePurchase(b *testing.B) { storetest.BenchApprovePurchase(b, open) }
