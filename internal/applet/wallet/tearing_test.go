package wallet_test

import (
	"bytes"
	"context"
	"testing"

	"cardlink/internal/applet/wallet/wallettest"
	"cardlink/internal/iso7816"
	"cardlink/internal/txn"
)

// opWrites counts the NVM writes op makes on a fork of env.
func opWrites(t *testing.T, env *wallettest.Env, op func(*wallettest.Env) error) int {
	t.Helper()
	f := env.Fork(t, env.Snapshot())
	before := f.Medium.Writes()
	_ = op(f)
	return f.Medium.Writes() - before
}

func TestTearVerifyWrongPIN(t *testing.T) {
	env := wallettest.New(t, wallettest.Options{})
	op := func(e *wallettest.Env) error { return e.Client.VerifyPIN(context.Background(), "0000") }
	seen := map[int]bool{}
	defer wantSeen(t, "PIN tries", seen, 3, 2)
	wallettest.Tear(t, env, op, func(t *testing.T, e *wallettest.Env, _ error, cutAt int) {
		in := info(t, e)
		seen[in.PINTries] = true
		if in.PINTries != 3 && in.PINTries != 2 {
			t.Fatalf("PIN tries after a cut at write %d of a wrong VERIFY = %d, want 3 (not persisted, no comparison) or 2", cutAt, in.PINTries)
		}
		if st, err := e.Client.PINStatus(context.Background()); err != nil || st.Verified {
			t.Errorf("PINStatus() after the cut = %+v, %v, want not verified", st, err)
		}
		// The card still works and counts down from where it is.
		if err := e.Client.VerifyPIN(context.Background(), "0000"); sw(err) != iso7816.SWTriesLeft(in.PINTries-1) {
			t.Errorf("VerifyPIN(wrong) after the cut = %v, want %v", err, iso7816.SWTriesLeft(in.PINTries-1))
		}
	})
}

func TestTearVerifyRightPIN(t *testing.T) {
	env := wallettest.New(t, wallettest.Options{})
	// One wrong try first, so that a reset to 3 is told apart from "nothing
	// was written".
	if err := env.Client.VerifyPIN(t.Context(), "0000"); sw(err) != 0x63C2 {
		t.Fatalf("VerifyPIN(wrong) = %v, want 63C2", err)
	}
	op := func(e *wallettest.Env) error { return e.Client.VerifyPIN(context.Background(), wallettest.PIN) }
	n := opWrites(t, env, op)
	seen := map[int]bool{}
	defer wantSeen(t, "PIN tries", seen, 1, 2, 3)
	wallettest.Tear(t, env, op, func(t *testing.T, e *wallettest.Env, _ error, cutAt int) {
		in := info(t, e)
		seen[in.PINTries] = true
		switch in.PINTries {
		case 2, 1: // the decrement did not commit, or the reset did not
		case 3:
			if cutAt < n/2 {
				t.Errorf("PIN tries = 3 after a cut at write %d, in the decrement's update (writes 0..%d)", cutAt, n/2-1)
			}
		default:
			t.Fatalf("PIN tries after a cut at write %d of a right VERIFY = %d, want 1, 2 or 3", cutAt, in.PINTries)
		}
		if _, err := e.Client.SignTransaction(context.Background(), encode(t, e.Transaction(1, 1)), false); sw(err) != iso7816.SWSecurityStatus {
			t.Errorf("SignTransaction after a cut VERIFY and power cycle = %v, want 6982", err)
		}
	})
}

func TestTearSignTransaction(t *testing.T) {
	env := wallettest.New(t, wallettest.Options{})
	ctx := context.Background()
	// Some history, so that the log is not empty.
	for i := range 3 {
		if _, err := env.Client.SignTransaction(ctx, encode(t, env.Transaction(int64(10+i), byte(10+i))), true); err != nil {
			t.Fatal(err)
		}
	}
	before := info(t, env)
	tb := encode(t, env.Transaction(4242, 42))
	op := func(e *wallettest.Env) error {
		if err := e.Client.VerifyPIN(ctx, wallettest.PIN); err != nil {
			return err
		}
		_, err := e.Client.SignTransaction(ctx, tb, false)
		return err
	}
	seen := map[int]bool{}
	defer wantSeen(t, "counter", seen, int(before.Counter), int(before.Counter)+1)
	wallettest.Tear(t, env, op, func(t *testing.T, e *wallettest.Env, _ error, cutAt int) {
		in := info(t, e)
		seen[int(in.Counter)] = true
		switch in.Counter {
		case before.Counter:
			if in.LogUsed != before.LogUsed {
				t.Errorf("log grew to %d records but the counter stayed at %d (cut at %d)", in.LogUsed, in.Counter, cutAt)
			}
		case before.Counter + 1:
			if in.LogUsed != before.LogUsed+1 {
				t.Errorf("counter moved to %d but the log has %d records, want %d (cut at %d)", in.Counter, in.LogUsed, before.LogUsed+1, cutAt)
			}
			r, err := e.Client.ReadRecord(ctx, 1)
			if err != nil || r.Counter != in.Counter || r.CVM != txn.CVMOfflinePIN || !bytes.Equal(r.Payload, tb) {
				t.Errorf("ReadRecord(1) = %+v, %v, want the transaction at counter %d", r, err, in.Counter)
			}
		default:
			t.Fatalf("counter after a cut at write %d = %d, want %d or %d", cutAt, in.Counter, before.Counter, before.Counter+1)
		}
		if in.PINTries > before.PINTries {
			t.Errorf("PIN tries after the cut = %d, more than %d before", in.PINTries, before.PINTries)
		}
		// The card goes on from the counter it has.
		s, err := e.Client.SignTransaction(ctx, tb, true)
		if err != nil || s.Counter != in.Counter+1 {
			t.Errorf("SignTransaction after the cut = %d, %v, want counter %d", s.Counter, err, in.Counter+1)
		}
	})
}

// wantSeen checks that the cuts produced every outcome in want: a tearing
// test that only ever saw one side of a commit tests nothing.
func wantSeen(t *testing.T, what string, seen map[int]bool, want ...int) {
	t.Helper()
	for _, w := range want {
		if !seen[w] {
			t.Errorf("no power cut left %s = %d (saw %v)", what, w, seen)
		}
	}
}

func TestTearInternalAuthenticate(t *testing.T) {
	env := wallettest.New(t, wallettest.Options{})
	before := info(t, env).Counter
	op := func(e *wallettest.Env) error {
		_, err := e.Client.Authenticate(context.Background(), make([]byte, 32), nil)
		return err
	}
	seen := map[int]bool{}
	defer wantSeen(t, "counter", seen, int(before), int(before)+1)
	wallettest.Tear(t, env, op, func(t *testing.T, e *wallettest.Env, _ error, cutAt int) {
		got := counter(t, e)
		seen[int(got)] = true
		if got != before && got != before+1 {
			t.Fatalf("counter after a cut at write %d = %d, want %d or %d", cutAt, got, before, before+1)
		}
		s, err := e.Client.Authenticate(context.Background(), make([]byte, 32), nil)
		if err != nil || s.Counter != got+1 {
			t.Errorf("Authenticate() after the cut = %d, %v, want counter %d", s.Counter, err, got+1)
		}
	})
}

func TestTearChangePIN(t *testing.T) {
	env := wallettest.New(t, wallettest.Options{})
	const next = "97531"
	op := func(e *wallettest.Env) error { return e.Client.ChangePIN(context.Background(), wallettest.PIN, next) }
	seen := map[int]bool{}
	defer wantSeen(t, "PIN (0 old, 1 new)", seen, 0, 1)
	wallettest.Tear(t, env, op, func(t *testing.T, e *wallettest.Env, _ error, cutAt int) {
		in := info(t, e)
		if in.PINTries < 2 || in.PINTries > 3 {
			t.Fatalf("PIN tries after a cut at write %d = %d, want 2 or 3", cutAt, in.PINTries)
		}
		// Exactly one of the two PINs is the PIN now.
		errOld := e.Client.VerifyPIN(context.Background(), wallettest.PIN)
		errNew := e.Client.VerifyPIN(context.Background(), next)
		switch {
		case errOld == nil && errNew != nil:
			seen[0] = true
		case errOld != nil && errNew == nil:
			seen[1] = true
			if in.PINTries != 3 {
				t.Errorf("new PIN in place with %d tries, want 3 (written in the same update)", in.PINTries)
			}
		default:
			t.Errorf("after a cut at write %d: VerifyPIN(old) = %v, VerifyPIN(new) = %v; want exactly one to succeed", cutAt, errOld, errNew)
		}
	})
}

func TestTearUnblockWrongPUK(t *testing.T) {
	env := wallettest.New(t, wallettest.Options{})
	op := func(e *wallettest.Env) error { return e.Client.UnblockPIN(context.Background(), "00000000", "1111") }
	seen := map[int]bool{}
	defer wantSeen(t, "PUK tries", seen, 10, 9)
	wallettest.Tear(t, env, op, func(t *testing.T, e *wallettest.Env, _ error, cutAt int) {
		in := info(t, e)
		seen[in.PUKTries] = true
		if in.PUKTries != 10 && in.PUKTries != 9 {
			t.Fatalf("PUK tries after a cut at write %d = %d, want 10 or 9", cutAt, in.PUKTries)
		}
		if in.PINTries != 3 {
			t.Errorf("PIN tries after a cut wrong-PUK unblock = %d, want 3", in.PINTries)
		}
	})
}

func TestTearVerifyBiometric(t *testing.T) {
	env := wallettest.New(t, wallettest.Options{})
	op := func(e *wallettest.Env) error {
		return e.Client.VerifyBiometric(context.Background(), wallettest.Sample(e.BioTemplate, 300))
	}
	seen := map[int]bool{}
	defer wantSeen(t, "biometric tries", seen, 5, 4)
	wallettest.Tear(t, env, op, func(t *testing.T, e *wallettest.Env, _ error, cutAt int) {
		in := info(t, e)
		seen[in.BioTries] = true
		if in.BioTries != 5 && in.BioTries != 4 {
			t.Fatalf("biometric tries after a cut at write %d = %d, want 5 or 4", cutAt, in.BioTries)
		}
	})
}
