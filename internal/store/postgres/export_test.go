package postgres

import (
	"context"
	"testing/fstest"
)

// Migrate applies the migrations in fsys.
func Migrate(s *Store, fsys fstest.MapFS) error { return s.migrate(context.Background(), fsys) }

// HasTable reports whether the connection's schema has the table.
func HasTable(s *Store, name string) (bool, error) {
	var ok bool
	err := s.pool.QueryRow(context.Background(),
		`SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = current_schema() AND tablename = $1)`, name).Scan(&ok)
	return ok, err
}

// Exec runs a statement.
func Exec(s *Store, query string) error {
	_, err := s.pool.Exec(context.Background(), query)
	return err
}
