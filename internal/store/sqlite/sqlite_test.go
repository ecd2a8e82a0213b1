package sqlite_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"cardlink/internal/store"
	"cardlink/internal/store/sqlite"
	"cardlink/internal/store/storetest"
)

// dbs maps each test to its database file: the first open creates it in
// the test's temporary directory, later opens share it.
var dbs sync.Map // testing.TB → string

func open(t testing.TB) store.Store {
	t.Helper()
	path, _ := dbs.LoadOrStore(t, filepath.Join(t.TempDir(), "cardlink.db"))
	s, err := sqlite.Open(context.Background(), path.(string))
	if err != nil {
		t.Fatalf("Open(%s) = %v", path, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close = %v", err)
		}
		dbs.Delete(t)
	})
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, open)
}

func TestOpenURI(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "uri.db")
	s, err := store.Open(ctx, "sqlite:"+path)
	if err != nil {
		t.Fatalf("store.Open(sqlite:%s) = %v", path, err)
	}
	defer s.Close()
	if _, ok := s.(*sqlite.Store); !ok {
		t.Fatalf("store.Open(sqlite:…) = %T, want *sqlite.Store", s)
	}

	for _, tt := range []struct{ name, path string }{
		{"empty", ""},
		{"query", path + "?mode=ro"},
		{"fragment", path + "#x"},
		{"missing directory", filepath.Join(t.TempDir(), "no", "such", "dir.db")},
	} {
		if s, err := sqlite.Open(ctx, tt.path); err == nil {
			s.Close()
			t.Errorf("Open(%s) = nil error, want one", tt.name)
		}
	}
}

func TestFileMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mode.db")
	s, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatalf("Open = %v", err)
	}
	defer s.Close()
	for _, name := range []string{path, path + "-wal"} {
		fi, err := os.Stat(name)
		if err != nil {
			t.Fatalf("Stat(%s) = %v", name, err)
		}
		if m := fi.Mode().Perm(); m != 0o600 {
			t.Errorf("mode of %s = %v, want -rw-------", filepath.Base(name), m)
		}
	}
}

func TestSchemaVersion(t *testing.T) {
	ctx := context.Background()
	s := open(t).(*sqlite.Store)
	v, err := s.SchemaVersion(ctx)
	if err != nil || v != 8 {
		t.Fatalf("SchemaVersion = %d, %v; want 8, nil", v, err)
	}
}

// TestNewerSchemaRefused: a database migrated by a newer program is not
// touched by an older one.
func TestNewerSchemaRefused(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "newer.db")
	s, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatalf("Open = %v", err)
	}
	if err := sqlite.InsertSchemaVersion(s, 99); err != nil {
		t.Fatalf("inserting version 99: %v", err)
	}
	s.Close()
	_, err = sqlite.Open(ctx, path)
	if err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("Open(newer schema) = %v, want a 'newer' error", err)
	}
}

func TestMigrations(t *testing.T) {
	s := open(t).(*sqlite.Store)
	storetest.RunMigrations(t, storetest.Migrator{
		Migrate:  func(fsys fstest.MapFS) error { return sqlite.Migrate(s, fsys) },
		HasTable: func(name string) (bool, error) { return sqlite.HasTable(s, name) },
		Version:  func() (int, error) { return s.SchemaVersion(context.Background()) },
	})
}

func TestUpgrade(t *testing.T) {
	storetest.RunUpgrade(t, storetest.Upgrader{
		Open:    open,
		Exec:    func(s store.Store, q string) error { return sqlite.Exec(s.(*sqlite.Store), q) },
		Version: func(s store.Store) (int, error) { return s.(*sqlite.Store).SchemaVersion(context.Background()) },
	})
}

func BenchmarkTakeChallenge(b *testing.B)   { storetest.BenchTakeChallenge(b, open) }
func BenchmarkAdvanceCounter(b *testing.B)  { storetest.BenchAdvanceCounter(b, open) }
func BenchmarkPurchase(b *testing.B)        { storetest.BenchPurchase(b, open) }
func BenchmarkApprovePurchase(b *testing.B) { storetest.BenchApprovePurchase(b, open) }
