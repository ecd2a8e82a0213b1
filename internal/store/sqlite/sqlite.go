// Package sqlite is the embedded default store backend: one SQLite file
// through modernc.org/sqlite (pure Go, no cgo), in WAL mode, with embedded
// forward-only migrations applied when it opens.
//
// All writes go through one connection, each in a BEGIN IMMEDIATE
// transaction, so writers queue in Go instead of failing with SQLITE_BUSY;
// reads use a pool of read-only connections. Another process (or another
// Store) on the same file waits up to busyTimeout for the write lock.
//
// The purchase lifecycle's writes and the ledger's batches use group
// commit: the writes waiting at once run one after the other in one
// transaction, each in a SAVEPOINT so that a refused one rolls back alone,
// and share its commit (one fsync); each caller is answered only after
// that commit.
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
	"sync"
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

	// Group commit (gtx): requests go to the committer goroutine on
	// group; quit stops it, done says it has.
	group      chan *groupWrite
	quit, done chan struct{}
	closeOnce  sync.Once
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
	// The statement journals SQLite keeps for multi-row writes stay in
	// memory on the writer (temp_store moves only temporary files).
	w, err := openDB(path + params + "&_txlock=immediate&_pragma=temp_store(MEMORY)")
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
	r, err := openDB(path + params + "&_query_only=1")
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("opening sqlite store: %w", err)
	}
	n := max(2, runtime.GOMAXPROCS(0))
	r.SetMaxOpenConns(n)
	r.SetMaxIdleConns(n)
	s.r = r
	s.group, s.quit, s.done = make(chan *groupWrite), make(chan struct{}), make(chan struct{})
	go s.commitGroups()
	return s, nil
}

// Close closes the database, after the group commit under way.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.quit)
		<-s.done
	})
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
	err := s.row(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&v)
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

// maxGroup caps the writes of one group commit.
const maxGroup = 128

// errClosed: the store is closed.
var errClosed = errors.New("sqlite store closed")

// groupWrite is one write waiting for a group commit.
type groupWrite struct {
	ctx  context.Context
	f    func(context.Context, *sql.Tx) error
	done chan error // buffered: the committer never blocks on it
}

// gtx runs f in a write transaction as tx does, but grouped with the other
// gtx writes waiting at the same time (group commit): they run one after
// the other on the writer connection in one BEGIN IMMEDIATE transaction,
// f in a SAVEPOINT of its own, and commit together. If f returns an error
// (other than a commit), only its savepoint rolls back; if the commit
// fails, every f that succeeded gets the commit's error and nothing of the
// group is written. gtx returns only after the commit, so what it
// acknowledges is durable (synchronous=FULL).
//
// f gets a context without ctx's cancellation (its values stay): an
// interrupted statement would roll back the whole group. It must change
// nothing outside tx but its own results, read through tx only (the
// writes of the group are not committed yet) and never call the Store
// (the writer connection is the group's: it would wait for ever). If ctx ends before f ran, f
// does not run; after that, gtx returns ctx's error and f's outcome is
// unknown.
func (s *Store) gtx(ctx context.Context, f func(context.Context, *sql.Tx) error) error {
	w := &groupWrite{ctx: ctx, f: f, done: make(chan error, 1)}
	select {
	case s.group <- w:
	case <-s.quit:
		return errClosed
	case <-ctx.Done():
		return fmt.Errorf("waiting for the writer: %w", ctx.Err())
	}
	select {
	case err := <-w.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("writing: outcome unknown: %w", ctx.Err())
	}
}

// commitGroups is the committer: it takes every write waiting (up to
// maxGroup) and runs them in one transaction, until quit.
func (s *Store) commitGroups() {
	defer close(s.done)
	batch := make([]*groupWrite, 0, maxGroup)
	for {
		select {
		case w := <-s.group:
			batch = append(batch[:0], w)
		case <-s.quit:
			return
		}
	gather:
		for len(batch) < maxGroup {
			select {
			case w := <-s.group:
				batch = append(batch, w)
			default:
				break gather
			}
		}
		s.commitGroup(batch)
		clear(batch)
	}
}

// commitGroup runs batch in one transaction and answers each write after
// the commit.
func (s *Store) commitGroup(batch []*groupWrite) {
	errs := make([]error, len(batch))
	answer := func(failed error) {
		for i, w := range batch {
			var keep commit
			switch {
			case errs[i] != nil && !errors.As(errs[i], &keep):
				w.done <- errs[i] // refused, or never ran: nothing of it to commit
			case failed != nil:
				w.done <- failed
			default:
				w.done <- keep.err // nil, or the outcome it committed
			}
		}
	}
	ctx := context.Background()
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		answer(fmt.Errorf("beginning transaction: %w", err))
		return
	}
	for i, w := range batch {
		if err := w.ctx.Err(); err != nil {
			errs[i] = fmt.Errorf("waiting for the writer: %w", err)
			continue
		}
		if len(batch) == 1 {
			// Alone: the transaction is its savepoint.
			errs[i] = w.f(context.WithoutCancel(w.ctx), tx)
			var keep commit
			if errs[i] != nil && !errors.As(errs[i], &keep) {
				tx.Rollback()
				answer(nil)
				return
			}
			break
		}
		if _, err := tx.ExecContext(ctx, `SAVEPOINT w`); err != nil {
			tx.Rollback()
			answer(fmt.Errorf("opening savepoint: %w", err))
			return
		}
		errs[i] = w.f(context.WithoutCancel(w.ctx), tx)
		var keep commit
		if errs[i] != nil && !errors.As(errs[i], &keep) {
			if _, err := tx.ExecContext(ctx, `ROLLBACK TO w`); err != nil {
				// SQLite rolled back the whole transaction (an I/O
				// error…): nothing of the group is written.
				tx.Rollback()
				answer(fmt.Errorf("rolling back to savepoint (after %v): %w", errs[i], err))
				return
			}
		}
		if _, err := tx.ExecContext(ctx, `RELEASE w`); err != nil {
			tx.Rollback()
			answer(fmt.Errorf("releasing savepoint: %w", err))
			return
		}
	}
	if err := tx.Commit(); err != nil {
		answer(fmt.Errorf("committing: %w", err))
		return
	}
	answer(nil)
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

// row runs a query that returns at most one row, found by a key, on a
// read connection. A ctx that has already ended fails it at once; after
// that the read does not watch ctx: it takes microseconds, and a
// statement that may be cancelled costs a goroutine of the driver's
// (modernc's interrupt watcher) and a progress handler, about as much
// as the read itself. Reads that may run long (lists, statements) keep
// ctx.
func (s *Store) row(ctx context.Context, query string, args ...any) *sql.Row {
	if ctx.Err() != nil {
		return s.r.QueryRowContext(ctx, query, args...)
	}
	return s.r.QueryRowContext(context.WithoutCancel(ctx), query, args...)
}
