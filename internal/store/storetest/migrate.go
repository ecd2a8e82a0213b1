package storetest

import (
	"strings"
	"testing"
	"testing/fstest"
)

// Migrator reaches into a backend's migrations for RunMigrations. The
// backend's test exports these from its internals.
type Migrator struct {
	// Migrate applies the migrations in fsys (migrations/NNNN_name.sql),
	// as Open does with the embedded ones.
	Migrate func(fsys fstest.MapFS) error
	// HasTable reports whether the store's schema has the table.
	HasTable func(name string) (bool, error)
	// Version returns the schema version.
	Version func() (int, error)
}

// RunMigrations checks, on a store at schema version 1, that a failing
// migration leaves nothing of the whole run behind, that a good one is
// applied once and recorded, and that misnumbered files are refused.
func RunMigrations(t *testing.T, m Migrator) {
	file := func(sql string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(sql)} }
	v1 := file("this is never run again")
	good := file("CREATE TABLE mig_good (x integer);")
	bad := file("CREATE TABLE mig_bad (x integer); SELECT * FROM mig_no_such_table;")

	state := func(what string, version int, tables map[string]bool) {
		t.Helper()
		v, err := m.Version()
		if err != nil || v != version {
			t.Fatalf("%s: Version = %d, %v; want %d", what, v, err, version)
		}
		for name, want := range tables {
			if got, err := m.HasTable(name); err != nil || got != want {
				t.Fatalf("%s: HasTable(%s) = %v, %v; want %v", what, name, got, err, want)
			}
		}
	}
	state("before", 1, map[string]bool{"challenges": true, "mig_good": false})

	tests := []struct {
		name    string
		fsys    fstest.MapFS
		wantErr string // substring; empty for success
		version int
		tables  map[string]bool
	}{
		{"failing third migration", fstest.MapFS{
			"migrations/0001_auth.sql": v1, "migrations/0002_good.sql": good, "migrations/0003_bad.sql": bad,
		}, "0003_bad", 1, map[string]bool{"mig_good": false, "mig_bad": false}},
		{"gap in numbers", fstest.MapFS{
			"migrations/0001_auth.sql": v1, "migrations/0003_good.sql": good,
		}, "want number 0002", 1, map[string]bool{"mig_good": false}},
		{"not numbered", fstest.MapFS{
			"migrations/0001_auth.sql": v1, "migrations/good.sql": good,
		}, "want number", 1, map[string]bool{"mig_good": false}},
		{"good second migration", fstest.MapFS{
			"migrations/0001_auth.sql": v1, "migrations/0002_good.sql": good,
		}, "", 2, map[string]bool{"mig_good": true}},
		{"again: nothing to do", fstest.MapFS{
			"migrations/0001_auth.sql": v1, "migrations/0002_good.sql": good,
		}, "", 2, map[string]bool{"mig_good": true}},
		{"older program", fstest.MapFS{
			"migrations/0001_auth.sql": v1,
		}, "newer than this program", 2, map[string]bool{"mig_good": true}},
	}
	for _, tt := range tests {
		err := m.Migrate(tt.fsys)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Fatalf("%s: Migrate = %v, want nil", tt.name, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Fatalf("%s: Migrate = %v, want error containing %q", tt.name, err, tt.wantErr)
		}
		state(tt.name, tt.version, tt.tables)
	}
}
