package sqlite

import (
	"context"
	"testing/fstest"
)

// InsertSchemaVersion records a schema version, as a newer program would.
func InsertSchemaVersion(s *Store, v int) error {
	_, err := s.w.Exec(`INSERT INTO schema_version (version, applied) VALUES (?, 0)`, v)
	return err
}

// Migrate applies the migrations in fsys.
func Migrate(s *Store, fsys fstest.MapFS) error { return s.migrate(context.Background(), fsys) }

// HasTable reports whether the database has the table.
func HasTable(s *Store, name string) (bool, error) {
	var n int
	err := s.r.QueryRow(`SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?`, name).Scan(&n)
	return n == 1, err
}

// Exec runs a statement on the writer connection.
func Exec(s *Store, query string) error {
	_, err := s.w.Exec(query)
	return err
}
