package store

import (
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"
)

// MigrationFiles returns a backend's migrations/NNNN_name.sql files in
// fsys in order, and an error unless they are numbered 1, 2, 3… without
// gaps. Both backends apply them forward only, each in a transaction.
func MigrationFiles(fsys fs.FS) ([]string, error) {
	names, err := fs.Glob(fsys, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	for i, name := range names {
		num, _, _ := strings.Cut(strings.TrimPrefix(name, "migrations/"), "_")
		if n, err := strconv.Atoi(num); err != nil || n != i+1 {
			return nil, fmt.Errorf("migration %s: want number %04d", name, i+1)
		}
	}
	return names, nil
}
