// Package sqlite is the embedded default store backend: one SQLite file
// through modernc.org/sqlite (pure Go, no cgo), in WAL mode, with embedded
// forward-only migrations applied when it opens.
//
// All writes go through one connection, each in a BEGIN IMMEDIATE
// transaction, so writers queue in Go instead of failing with SQLITE_BUSY;
// reads use a pool of read-only connections. Another process (or another
// Store) on the same file waits up to busyTimeout for the write lock.
//
// It registers the "sqlite" scheme with package store: "sqlite:/path/file.db".
// It must not import server packages: policy is the caller's.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"cardlink/internal/store"
)

// busyTimeout bounds how long a statement waits for another connection's
// lock (another process or Store on the same file) before SQLITE_BUSY.
const busyTimeout = 10 * time.Second

//go:embed migrations/*.sql
var migrations embed.FS

// Store is a store.Store over one SQLite file. It is safe for concurrent
// use.
type Store struct {
	w *sql.DB // the one writer connection
	r *sql.DB // read-only connections
}

var _ store.Store = (*Store)(nil)

func init() {
	store.Register("sqlite", func(ctx context.Context, uri string) (store.Store, error) {
		path, ok := strings.CutPrefix(uri, "sqlite:")
		if !ok {
			return nil, errors.New(`opening sqlite store: want a URI starting with "sqlite"`)
		}
		return Open(ctx, path)
	})
}

// Open opens the database file at path, creating it (mode 0600) if
// missing, and applies any migration it lacks, in one transaction. The
// path may not contain '?' or '#'.
func Open(ctx context.Context, path string) (*Store, error) {
	if path == "" || strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("opening sqlite store: bad path %q (want a file name without ? or #)", path)
	}
	// The file holds secrets (server keys, webhook secrets): create it for
	// the owner only; SQLite gives its -wal and -shm files the same mode.
	if f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600); err == nil {
		f.Close()
	} else if !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("opening sqlite store: %w", err)
	}
	params := "?_busy_timeout=" + strconv.FormatInt(busyTimeout.Milliseconds(), 10) +
		"&_journal_mode=WAL&_synchronous=FULL&_foreign_keys=1"
	w, err := sql.Open("sqlite", path+params+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("opening sqlite store: %w", err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	s := &Store{w: w}
	if err := s.migrate(ctx, migrations); err != nil {
		w.Close()
		return nil, fmt.Errorf("opening sqlite store %s: %w", path, err)
	}
	// Readers open after the writer made the file and set WAL mode.
	r, err := sql.Open("sqlite", path+params+"&_query_only=1")
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("opening sqlite store: %w", err)
	}
	n := max(2, runtime.GOMAXPROCS(0))
	r.SetMaxOpenConns(n)
	r.SetMaxIdleConns(n)
	s.r = r
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error {
	return errors.Join(s.r.Close(), s.w.Close())
}

// migrate brings the schema up to date with the migrations in fsys, in
// one transaction.
func (s *Store) migrate(ctx context.Context, fsys fs.FS) error {
	files, err := store.MigrationFiles(fsys)
	if err != nil {
		return err
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
			version INTEGER PRIMARY KEY,
			applied INTEGER NOT NULL)`); err != nil {
			return fmt.Errorf("creating schema_version: %w", err)
		}
		var have int
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&have); err != nil {
			return fmt.Errorf("reading schema version: %w", err)
		}
		if have > len(files) {
			return fmt.Errorf("database schema version %d is newer than this program's %d", have, len(files))
		}
		for i := have; i < len(files); i++ {
			body, err := fs.ReadFile(fsys, files[i])
			if err != nil {
				return fmt.Errorf("reading migration: %w", err)
			}
			if _, err := tx.ExecContext(ctx, string(body)); err != nil {
				return fmt.Errorf("applying migration %s: %w", files[i], err)
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version, applied) VALUES (?, ?)`,
				i+1, time.Now().UnixMicro()); err != nil {
				return fmt.Errorf("recording migration %s: %w", files[i], err)
			}
		}
		return nil
	})
}

// SchemaVersion returns the schema version of the database.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	err := s.r.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&v)
	return v, err
}

// tx runs f in one write transaction (BEGIN IMMEDIATE on the writer
// connection): it commits if f returns nil or a commit error, and rolls
// back otherwise; it returns f's error (a commit error unwrapped).
func (s *Store) tx(ctx context.Context, f func(*sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("beginning transaction: %w", err)
	}
	ferr := f(tx)
	var keep commit
	if ferr != nil && !errors.As(ferr, &keep) {
		tx.Rollback()
		return ferr
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("committing: %w", err)
	}
	return keep.err
}

// commit is an outcome that changed state on purpose (ErrCounterReplay
// flags the card): tx commits, then returns err.
type commit struct{ err error }

func (c commit) Error() string { return c.err.Error() }

// isConstraint reports whether err is a violation of one of the given
// extended SQLite constraint codes.
func isConstraint(err error, codes ...int) bool {
	var e *sqlite.Error
	return errors.As(err, &e) && slices.Contains(codes, e.Code())
}

func isUnique(err error) bool {
	return isConstraint(err, sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY)
}

func isForeignKey(err error) bool {
	return isConstraint(err, sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY)
}

// micros stores a time: microseconds since the epoch, NULL for the zero
// time.
func micros(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixMicro(), Valid: true}
}

// fromMicros reads a time stored by micros, in UTC.
func fromMicros(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return time.UnixMicro(v.Int64).UTC()
}

// blob makes nil bytes an empty BLOB for NOT NULL columns.
func blob(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
