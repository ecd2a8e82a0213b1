package auth

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"cardlink/internal/protocol"
	"cardlink/internal/store"
	_ "cardlink/internal/store/postgres" // registers "postgres"
	"cardlink/internal/store/postgres/pgtest"
	_ "cardlink/internal/store/sqlite" // registers "sqlite"
)

// envPostgres names the variable with the DSN of a PostgreSQL server the
// tests may create schemas in (scripts/postgres.sh start prints it).
const envPostgres = "CARDLINK_TEST_POSTGRES"

// TestTwoInstances runs two Services over two store.Open of one database,
// as two server instances do: a challenge issued by one is answered at the
// other, exactly once, and the card's counter and the relying party's
// request are shared.
func TestTwoInstances(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		uri := "sqlite:" + filepath.Join(t.TempDir(), "auth.db")
		testTwoInstances(t, openURI(t, uri), openURI(t, uri))
	})
	t.Run("postgres", func(t *testing.T) {
		dsn := os.Getenv(envPostgres)
		if dsn == "" {
			t.Skipf("%s is not set: no PostgreSQL to test against (start one with: eval \"$(scripts/postgres.sh start --fsync-off)\")", envPostgres)
		}
		uri := postgresSchema(t, dsn)
		testTwoInstances(t, openURI(t, uri), openURI(t, uri))
	})
}

func openURI(t testing.TB, uri string) store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), uri)
	if err != nil {
		t.Fatalf("store.Open = %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// postgresSchema creates a fresh schema, dropped when t ends, and returns
// dsn using it with a small connection pool.
func postgresSchema(t testing.TB, dsn string) string {
	t.Helper()
	return pgtest.Schema(t, dsn, "auth_test_", 4)
}

func testTwoInstances(t *testing.T, a, b store.Store) {
	r := newRigOn(t, a, nil)
	cfgB := r.cfg
	cfgB.Store = b
	svcB, err := New(cfgB)
	if err != nil {
		t.Fatalf("New(B) = %v", err)
	}
	clone := r.env.Fork(t, r.env.Snapshot())
	r.addRequest("req-1", "", "offline-pin")

	// Challenge at A, answer at B.
	sess := r.session()
	resp := r.answer(r.env, r.challenge(r.svc, sess, r.env), holderOfflinePIN, "")
	res := r.verify(svcB, sess, resp)
	if res.Code != protocol.CodeOK {
		t.Fatalf("Verify at B of A's challenge = %v, want ok", res.Code)
	}
	// The replay at A finds the challenge gone.
	checkResult(t, "replay at A", r.verify(r.svc, sess, resp), protocol.CodeChallengeUnknown)
	// B finished the request A's store shows.
	req, err := a.AuthRequest(r.ctx, "req-1")
	if err != nil || req.Status != store.AuthApproved {
		t.Errorf("AuthRequest at A = %v, %v; want approved", req.Status, err)
	}
	// One answer sent to both at once: exactly one wins.
	resp = r.answer(r.env, r.challenge(svcB, sess, r.env), holderOfflinePIN, "")
	var wg sync.WaitGroup
	codes := make([]protocol.Code, 2)
	for i, svc := range []*Service{r.svc, svcB} {
		wg.Go(func() {
			res, err := svc.Verify(r.ctx, sess, resp)
			if err != nil {
				t.Errorf("Verify = %v", err)
				return
			}
			codes[i] = res.Code
		})
	}
	wg.Wait()
	ok, unknown := 0, 0
	for _, c := range codes {
		switch c {
		case protocol.CodeOK:
			ok++
		case protocol.CodeChallengeUnknown:
			unknown++
		}
	}
	if ok != 1 || unknown != 1 {
		t.Errorf("concurrent Verify at A and B = %v, want one ok and one %v", codes, protocol.CodeChallengeUnknown)
	}

	// The clone's counter did not grow past what A and B accepted: A
	// refuses it, and from then on B refuses the card too, whichever copy
	// asks.
	respClone := r.answer(clone, r.challenge(r.svc, sess, clone), holderOfflinePIN, "")
	checkResult(t, "clone at A", r.verify(r.svc, sess, respClone), protocol.CodeCounterNotIncreasing)
	_, err = svcB.Challenge(r.ctx, sess, wire(t, challengeRequest(r.env, true)))
	var pe *protocol.Error
	if !errors.As(err, &pe) || pe.Code != protocol.CodeCounterNotIncreasing {
		t.Errorf("Challenge at B for the original after the clone = %v, want %v", err, protocol.CodeCounterNotIncreasing)
	}
}
