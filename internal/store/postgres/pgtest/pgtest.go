// Package pgtest gives tests a PostgreSQL of their own: the server named by
// CARDLINK_TEST_POSTGRES (scripts/postgres.sh starts one and prints it),
// and a fresh schema on it per test, dropped when the test ends, so that
// test runs and packages never see each other's tables.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// EnvDSN names the variable that points tests at a PostgreSQL server they
// may create schemas in.
const EnvDSN = "CARDLINK_TEST_POSTGRES"

// DSN returns the server's DSN, or skips t, saying how to start one.
func DSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv(EnvDSN)
	if dsn == "" {
		t.Skipf("%s is not set: no PostgreSQL to test against (start one with: eval \"$(bash scripts/postgres.sh start --fsync-off)\")", EnvDSN)
	}
	return dsn
}

// Schema creates an empty schema named prefix plus random hex on the
// server at dsn, drops it when t ends, and returns dsn set to use it
// (search_path) with at most conns pooled connections per pool, so that
// parallel tests stay under the server's max_connections.
func Schema(t testing.TB, dsn, prefix string, conns int) string {
	t.Helper()
	ctx := context.Background()
	b := make([]byte, 8)
	rand.Read(b)
	schema := prefix + hex.EncodeToString(b)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connecting to %s: %v", EnvDSN, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("creating schema %s: %v", schema, err)
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Errorf("connecting to drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("dropping schema %s: %v", schema, err)
		}
	})
	return WithParams(dsn, "search_path="+schema+"&pool_max_conns="+strconv.Itoa(conns))
}

// WithParams adds query parameters (a=b&c=d) to dsn, in URL or key=value
// form.
func WithParams(dsn, params string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		if strings.Contains(dsn, "?") {
			return dsn + "&" + params
		}
		return dsn + "?" + params
	}
	return dsn + " " + strings.ReplaceAll(params, "&", " ")
}
