// Package postgres is the store backend for operators who outgrow one
// machine: PostgreSQL through github.com/jackc/pgx/v5, with embedded
// forward-only migrations applied when it opens. Several server instances
// may share one database: every state change is one transaction whose
// outcome does not depend on which instance ran it (a conditional DELETE …
// RETURNING or UPDATE … WHERE decides races), and no instance keeps state
// of its own.
//
// It registers the "postgres" and "postgresql" schemes with package store:
// "postgres://user@host:port/db?search_path=…" as pgx parses it. It must
// not import server packages: policy is the caller's.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"cardlink/internal/store"
)

//go:embed migrations/*.sql
var migrations embed.FS

// migrationLock is the pg_advisory_xact_lock key that serialises
// migrations of instances opening at once ("cardlink" in ASCII).
const migrationLock = 0x636172646c696e6b

// Store is a store.Store over a PostgreSQL database. It is safe for
// concurrent use, and any number of Stores may share the database.
type Store struct {
	pool *pgxpool.Pool
}

var _ store.Store = (*Store)(nil)

func init() {
	open := func(ctx context.Context, uri string) (store.Store, error) { return Open(ctx, uri) }
	store.Register("postgres", open)
	store.Register("postgresql", open)
}

// Open connects to the database a pgx connection string names (URL or
// key=value form) and applies any migration it lacks, in one transaction.
// Tables live in the first schema of the connection's search_path.
func Open(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx's message may quote the DSN with its password; keep it out.
		return nil, errors.New("opening postgres store: cannot parse connection string")
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("opening postgres store: %w", err)
	}
	s := &Store{pool: pool}
	if err := s.migrate(ctx, migrations); err != nil {
		pool.Close()
		return nil, fmt.Errorf("opening postgres store: %w", err)
	}
	return s, nil
}

// Close closes the connections.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// migrate brings the schema up to date with the migrations in fsys, in
// one transaction, holding an
// advisory lock so that instances starting together apply each migration
// once.
func (s *Store) migrate(ctx context.Context, fsys fs.FS) error {
	files, err := store.MigrationFiles(fsys)
	if err != nil {
		return err
	}
	return s.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrationLock)); err != nil {
			return fmt.Errorf("locking for migration: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
			version integer PRIMARY KEY,
			applied timestamptz NOT NULL)`); err != nil {
			return fmt.Errorf("creating schema_version: %w", err)
		}
		var have int
		if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&have); err != nil {
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
			// No arguments: the simple protocol, which runs every statement.
			if _, err := tx.Exec(ctx, string(body)); err != nil {
				return fmt.Errorf("applying migration %s: %w", files[i], err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_version (version, applied) VALUES ($1, $2)`,
				i+1, time.Now().UTC()); err != nil {
				return fmt.Errorf("recording migration %s: %w", files[i], err)
			}
		}
		return nil
	})
}

// SchemaVersion returns the schema version of the database.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	err := s.pool.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&v)
	return v, err
}

// tx runs f in one transaction (READ COMMITTED): it commits if f returns
// nil or a commit error, and rolls back otherwise; it returns f's error (a
// commit error unwrapped).
func (s *Store) tx(ctx context.Context, f func(pgx.Tx) error) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("beginning transaction: %w", err)
	}
	defer tx.Rollback(ctx) // no-op after Commit
	ferr := f(tx)
	var keep commit
	if ferr != nil && !errors.As(ferr, &keep) {
		return ferr
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("committing: %w", err)
	}
	return keep.err
}

// commit is an outcome that changed state on purpose (ErrCounterReplay
// flags the card): tx commits, then returns err.
type commit struct{ err error }

func (c commit) Error() string { return c.err.Error() }

// PostgreSQL SQLSTATEs the store maps to its errors.
const (
	sqlstateUnique     = "23505"
	sqlstateForeignKey = "23503"
)

func isCode(err error, code string) bool {
	var e *pgconn.PgError
	return errors.As(err, &e) && e.Code == code
}

// ts stores a time: UTC, NULL for the zero time.
func ts(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC()
}

// fromTS reads a nullable time in UTC.
func fromTS(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

// blob makes nil bytes empty for NOT NULL columns.
func blob(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
