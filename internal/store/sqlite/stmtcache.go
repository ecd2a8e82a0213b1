package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"strings"
)

// The driver parses every statement run on a connection (rather than
// through a *sql.Stmt) anew: parsing was about a sixth of the CPU of a
// purchase. A cachingConn keeps each connection's statements prepared,
// keyed by their text, so the store's code keeps plain ExecContext and
// QueryContext calls.

// maxCached bounds the statements one connection keeps prepared; the
// store's statements are constant texts, far fewer than this.
const maxCached = 256

// openDB opens the database at dsn with connections that cache their
// prepared statements, through the driver registered as "sqlite".
func openDB(dsn string) (*sql.DB, error) {
	db, err := sql.Open("sqlite", dsn) // connects to nothing yet
	if err != nil {
		return nil, err
	}
	drv := db.Driver()
	db.Close()
	return sql.OpenDB(cachingConnector{dsn: dsn, drv: drv}), nil
}

// cachingConnector opens cachingConns.
type cachingConnector struct {
	dsn string
	drv driver.Driver
}

func (c cachingConnector) Connect(context.Context) (driver.Conn, error) {
	conn, err := c.drv.Open(c.dsn)
	if err != nil {
		return nil, err
	}
	return newCachingConn(conn)
}

func (c cachingConnector) Driver() driver.Driver { return c.drv }

// sqliteConn is what the driver's connections implement and a cachingConn
// passes on.
type sqliteConn interface {
	driver.Conn
	driver.ConnBeginTx
	driver.ConnPrepareContext
	driver.ExecerContext
	driver.QueryerContext
	driver.SessionResetter
	driver.Validator
	driver.Pinger
}

// cachingConn is a driver connection that runs ExecContext and
// QueryContext through statements it keeps prepared. database/sql uses a
// connection from one goroutine at a time (closing rows included), so it
// needs no lock.
type cachingConn struct {
	sqliteConn
	stmts map[string]*cachedStmt
}

// cachedStmt is a prepared statement; busy while it runs or its rows are
// open (a query run again meanwhile, on the same connection, is
// prepared afresh).
type cachedStmt struct {
	s    driver.Stmt
	busy bool
}

func newCachingConn(conn driver.Conn) (*cachingConn, error) {
	c, ok := conn.(sqliteConn)
	if !ok {
		conn.Close()
		return nil, errors.New("sqlite driver connection lacks an expected method")
	}
	return &cachingConn{sqliteConn: c, stmts: make(map[string]*cachedStmt)}, nil
}

// Close finalizes the statements and closes the connection.
func (c *cachingConn) Close() error {
	var errs []error
	for q, s := range c.stmts {
		errs = append(errs, s.s.Close())
		delete(c.stmts, q)
	}
	return errors.Join(append(errs, c.sqliteConn.Close())...)
}

// stmt returns the idle prepared statement for query, preparing it on
// first use, or nil when query is not to be cached (a script of several
// statements, a statement in use, a full cache).
func (c *cachingConn) stmt(ctx context.Context, query string) (*cachedStmt, error) {
	if s, ok := c.stmts[query]; ok {
		if s.busy {
			return nil, nil
		}
		return s, nil
	}
	if len(c.stmts) >= maxCached || strings.Contains(query, ";") {
		return nil, nil
	}
	st, err := c.sqliteConn.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	_, ok := st.(driver.StmtExecContext)
	_, ok2 := st.(driver.StmtQueryContext)
	if !ok || !ok2 {
		st.Close()
		return nil, nil
	}
	s := &cachedStmt{s: st}
	c.stmts[query] = s
	return s, nil
}

// ExecContext implements driver.ExecerContext.
func (c *cachingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	s, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	if s == nil {
		return c.sqliteConn.ExecContext(ctx, query, args)
	}
	s.busy = true
	defer func() { s.busy = false }()
	return s.s.(driver.StmtExecContext).ExecContext(ctx, args)
}

// QueryContext implements driver.QueryerContext.
func (c *cachingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	s, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	if s == nil {
		return c.sqliteConn.QueryContext(ctx, query, args)
	}
	s.busy = true
	rows, err := s.s.(driver.StmtQueryContext).QueryContext(ctx, args)
	if err != nil {
		s.busy = false
		return nil, err
	}
	return &cachedRows{Rows: rows, s: s}, nil
}

// cachedRows frees its statement when closed.
type cachedRows struct {
	driver.Rows
	s *cachedStmt
}

func (r *cachedRows) Close() error {
	err := r.Rows.Close()
	r.s.busy = false
	return err
}
