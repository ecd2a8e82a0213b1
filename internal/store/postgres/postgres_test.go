package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5"

	"cardlink/internal/store"
	"cardlink/internal/store/postgres"
	"cardlink/internal/store/storetest"
)

// envDSN names the variable that points the tests at a PostgreSQL server
// they may create schemas in; scripts/postgres.sh prints it.
const envDSN = "CARDLINK_TEST_POSTGRES"

// schemas maps each test to its DSN: the first open creates a fresh
// schema, later opens share it; cleanup drops it.
var schemas sync.Map // testing.TB → string

func baseDSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv(envDSN)
	if dsn == "" {
		t.Skipf("%s is not set: no PostgreSQL to test against (start one with: eval \"$(scripts/postgres.sh start --fsync-off)\")", envDSN)
	}
	return dsn
}

// testDSN returns dsn with its search_path set to schema, and at most
// poolConns connections per Store, so that parallel tests stay well under
// the server's max_connections.
func testDSN(dsn, schema string) string {
	params := "search_path=" + schema + "&pool_max_conns=" + poolConns
	switch {
	case strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://"):
		if strings.Contains(dsn, "?") {
			return dsn + "&" + params
		}
		return dsn + "?" + params
	default:
		return dsn + " " + strings.ReplaceAll(params, "&", " ")
	}
}

// poolConns is enough for the races: two goroutines on one Store.
const poolConns = "2"

// newSchema creates an empty schema for t, dropped when t ends, and
// returns a DSN that uses it.
func newSchema(t testing.TB) string {
	t.Helper()
	base := baseDSN(t)
	ctx := context.Background()
	b := make([]byte, 8)
	rand.Read(b)
	schema := "cardlink_test_" + hex.EncodeToString(b)
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connecting to %s: %v", envDSN, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("creating schema: %v", err)
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("connecting to drop schema: %v", err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("dropping schema %s: %v", schema, err)
		}
	})
	return testDSN(base, schema)
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
	baseDSN(t)
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
	if err != nil || v != 3 {
		t.Fatalf("SchemaVersion = %d, %v; want 3, nil", v, err)
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
	baseDSN(t)
	storetest.RunUpgrade(t, storetest.Upgrader{
		Open:    open,
		Exec:    func(s store.Store, q string) error { return postgres.Exec(s.(*postgres.Store), q) },
		Version: func(s store.Store) (int, error) { return s.(*postgres.Store).SchemaVersion(context.Background()) },
	})
}

func BenchmarkTakeChallenge(b *testing.B)  { storetest.BenchTakeChallenge(b, open) }
func BenchmarkAdvanceCounter(b *testing.B) { storetest.BenchAdvanceCounter(b, open) }
