package auth_test

import (
	"bytes"
	"context"
	"crypto/pbkdf2"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"cardlink/internal/pinblock"
	"cardlink/internal/server/auth"
	"cardlink/internal/store"
	"cardlink/internal/store/sqlite"
)

// Tests hash with few iterations; BenchmarkHashPIN measures the real cost.
const testIterations = 1000

func TestMain(m *testing.M) {
	auth.PINIterations = testIterations
	os.Exit(m.Run())
}

const (
	card     = "5078601870000127"
	rightPIN = "246810"
	wrongPIN = "135790"
)

var now = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

func openStore(t *testing.T, path string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatalf("sqlite.Open(%s) = %v", path, err)
	}
	return s
}

// newStore opens a fresh SQLite file holding card with the online PIN
// rightPIN and maxTries tries. The caller closes it.
func newStore(t *testing.T, maxTries int) (*sqlite.Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "server.db")
	s := openStore(t, path)
	ctx := t.Context()
	if err := s.PutCard(ctx, store.Card{Number: card, Cert: []byte{0x30}, IssuerKeyID: []byte{1}}, now); err != nil {
		t.Fatal(err)
	}
	p, err := auth.NewPIN(card, rightPIN, maxTries)
	if err != nil {
		t.Fatalf("NewPIN() = %v", err)
	}
	if err := s.SetPIN(ctx, p); err != nil {
		t.Fatal(err)
	}
	return s, path
}

func tries(t *testing.T, s store.PINs) int {
	t.Helper()
	p, err := s.PIN(t.Context(), card)
	if err != nil {
		t.Fatalf("PIN(%s) = %v", card, err)
	}
	return p.Tries
}

// outcome is what one verification gave, for table comparisons.
type outcome struct {
	tries int
	err   error // the sentinel or PINError it must match
}

func check(t *testing.T, step string, gotTries int, gotErr error, want outcome) {
	t.Helper()
	var pe *auth.PINError
	switch {
	case gotTries != want.tries:
		t.Errorf("%s: VerifyOnlinePIN() = %d, %v, want %d tries left", step, gotTries, gotErr, want.tries)
	case want.err == nil && gotErr != nil:
		t.Errorf("%s: VerifyOnlinePIN() = %d, %v, want success", step, gotTries, gotErr)
	case want.err == auth.ErrWrongPIN:
		if !errors.As(gotErr, &pe) || !errors.Is(gotErr, auth.ErrWrongPIN) || pe.TriesLeft != want.tries {
			t.Errorf("%s: VerifyOnlinePIN() = %d, %v, want *PINError with %d tries left", step, gotTries, gotErr, want.tries)
		}
	case want.err != nil && !errors.Is(gotErr, want.err):
		t.Errorf("%s: VerifyOnlinePIN() = %d, %v, want %v", step, gotTries, gotErr, want.err)
	}
}

func TestVerifyOnlinePIN(t *testing.T) {
	type step struct {
		pin  string
		want outcome
	}
	for _, tc := range []struct {
		name     string
		maxTries int
		steps    []step
	}{
		{"right at once", 3, []step{
			{rightPIN, outcome{3, nil}},
			{rightPIN, outcome{3, nil}},
		}},
		{"wrong until locked", 3, []step{
			{wrongPIN, outcome{2, auth.ErrWrongPIN}},
			{wrongPIN, outcome{1, auth.ErrWrongPIN}},
			{wrongPIN, outcome{0, auth.ErrWrongPIN}},
			{rightPIN, outcome{0, auth.ErrLocked}},
			{wrongPIN, outcome{0, store.ErrLocked}},
		}},
		{"right resets", 3, []step{
			{wrongPIN, outcome{2, auth.ErrWrongPIN}},
			{wrongPIN, outcome{1, auth.ErrWrongPIN}},
			{rightPIN, outcome{3, nil}},
			{wrongPIN, outcome{2, auth.ErrWrongPIN}},
		}},
		{"the last try still compares", 2, []step{
			{wrongPIN, outcome{1, auth.ErrWrongPIN}},
			{rightPIN, outcome{2, nil}},
		}},
		{"one try", 1, []step{
			{wrongPIN, outcome{0, auth.ErrWrongPIN}},
			{rightPIN, outcome{0, auth.ErrLocked}},
		}},
		{"malformed PINs take no try", 3, []step{
			{"", outcome{0, auth.ErrMalformedPIN}},
			{"123", outcome{0, auth.ErrMalformedPIN}},
			{"1234567890123", outcome{0, auth.ErrMalformedPIN}},
			{"24681a", outcome{0, auth.ErrMalformedPIN}},
			{rightPIN + " ", outcome{0, auth.ErrMalformedPIN}},
			{wrongPIN, outcome{2, auth.ErrWrongPIN}},
		}},
		{"a prefix is wrong", 3, []step{
			{rightPIN[:4], outcome{2, auth.ErrWrongPIN}},
			{rightPIN + "0", outcome{1, auth.ErrWrongPIN}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newStore(t, tc.maxTries)
			defer s.Close()
			for i, st := range tc.steps {
				left, err := auth.VerifyOnlinePIN(t.Context(), s, card, st.pin, now)
				check(t, fmt.Sprintf("step %d (%q)", i+1, st.pin), left, err, st.want)
				want := st.want.tries
				if errors.Is(st.want.err, auth.ErrMalformedPIN) {
					want = tc.maxTries // untouched; the steps before never took one
				}
				if got := tries(t, s); got != want {
					t.Errorf("step %d: stored tries = %d, want %d", i+1, got, want)
				}
			}
		})
	}
}

func TestVerifyOnlinePINNoRecord(t *testing.T) {
	s, _ := newStore(t, 3)
	defer s.Close()
	if n, err := auth.VerifyOnlinePIN(t.Context(), s, "4000000000000002", rightPIN, now); !errors.Is(err, store.ErrNotFound) || n != 0 {
		t.Errorf("VerifyOnlinePIN(card without PIN) = %d, %v, want 0, ErrNotFound", n, err)
	}
}

func TestLockSurvivesReopen(t *testing.T) {
	s, path := newStore(t, 2)
	for range 2 {
		auth.VerifyOnlinePIN(t.Context(), s, card, wrongPIN, now)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, path)
	defer s.Close()
	if n, err := auth.VerifyOnlinePIN(t.Context(), s, card, rightPIN, now); !errors.Is(err, auth.ErrLocked) {
		t.Errorf("VerifyOnlinePIN(right PIN) after reopening a locked PIN = %d, %v, want ErrLocked", n, err)
	}
	if got := tries(t, s); got != 0 {
		t.Errorf("stored tries after reopening = %d, want 0", got)
	}
}

// TestCrashAfterDecrement: a server that took tries and died before it
// compared (the decrement is the only thing it did) never gets them back.
func TestCrashAfterDecrement(t *testing.T) {
	s, path := newStore(t, 3)
	for range 2 {
		if _, err := s.DecrementPINTries(t.Context(), card); err != nil {
			t.Fatal(err)
		}
	}
	// Die: no comparison, no reset; the next instance opens the file.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, path)
	defer s.Close()
	if got := tries(t, s); got != 1 {
		t.Errorf("stored tries after two crashed verifications = %d, want 1", got)
	}
	n, err := auth.VerifyOnlinePIN(t.Context(), s, card, wrongPIN, now)
	check(t, "wrong after crash", n, err, outcome{0, auth.ErrWrongPIN})
	n, err = auth.VerifyOnlinePIN(t.Context(), s, card, rightPIN, now)
	check(t, "right after lock", n, err, outcome{0, auth.ErrLocked})
}

// failingReset is the real store whose ResetPINTries fails, as when the
// server dies or the database goes away between the comparison and the
// reset.
type failingReset struct{ store.PINs }

var errDied = errors.New("server died")

func (failingReset) ResetPINTries(context.Context, string) error { return errDied }

func TestMatchWithoutResetDoesNotCount(t *testing.T) {
	s, _ := newStore(t, 3)
	defer s.Close()
	n, err := auth.VerifyOnlinePIN(t.Context(), failingReset{s}, card, rightPIN, now)
	if !errors.Is(err, errDied) || n != 0 {
		t.Errorf("VerifyOnlinePIN(right PIN, reset fails) = %d, %v, want 0, the reset's error", n, err)
	}
	if got := tries(t, s); got != 2 {
		t.Errorf("stored tries after an unreset match = %d, want 2 (the try stays spent)", got)
	}
}

// orderPINs is the real store, noting the order of the calls that change
// tries and what the database held when each was made.
type orderPINs struct {
	store.PINs
	t     *testing.T
	calls []string
}

func (o *orderPINs) DecrementPINTries(ctx context.Context, card string) (store.PIN, error) {
	o.calls = append(o.calls, fmt.Sprintf("decrement(%d)", tries(o.t, o.PINs)))
	return o.PINs.DecrementPINTries(ctx, card)
}

func (o *orderPINs) ResetPINTries(ctx context.Context, card string) error {
	o.calls = append(o.calls, fmt.Sprintf("reset(%d)", tries(o.t, o.PINs)))
	return o.PINs.ResetPINTries(ctx, card)
}

// TestDecrementFirst: every comparison, right or wrong, comes after a
// committed decrement; a right PIN then resets.
func TestDecrementFirst(t *testing.T) {
	s, _ := newStore(t, 3)
	defer s.Close()
	for _, tc := range []struct {
		pin  string
		want []string
	}{
		{wrongPIN, []string{"decrement(3)"}},
		{rightPIN, []string{"decrement(2)", "reset(1)"}},
		{"12", nil},
	} {
		o := &orderPINs{PINs: s, t: t}
		auth.VerifyOnlinePIN(t.Context(), o, card, tc.pin, now)
		if !slices.Equal(o.calls, tc.want) {
			t.Errorf("VerifyOnlinePIN(%q) calls = %v, want %v", tc.pin, o.calls, tc.want)
		}
	}
}

// TestConcurrentGuesses: two server instances (two Stores on one SQLite
// file), each in its own goroutine, guess wrong as fast as they can; all
// of them together get exactly the try budget of comparisons.
func TestConcurrentGuesses(t *testing.T) {
	const maxTries, guesses = 5, 8 // per goroutine
	s1, path := newStore(t, maxTries)
	defer s1.Close()
	s2 := openStore(t, path)
	defer s2.Close()
	var (
		mu     sync.Mutex
		wrong  []int // tries left reported with each wrong PIN
		locked int
		other  []error
		wg     sync.WaitGroup
	)
	for _, s := range []*sqlite.Store{s1, s2} {
		wg.Go(func() {
			for range guesses {
				_, err := auth.VerifyOnlinePIN(context.Background(), s, card, wrongPIN, now)
				var pe *auth.PINError
				mu.Lock()
				switch {
				case errors.As(err, &pe):
					wrong = append(wrong, pe.TriesLeft)
				case errors.Is(err, auth.ErrLocked):
					locked++
				default:
					other = append(other, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(wrong)
	if want := []int{0, 1, 2, 3, 4}; !slices.Equal(wrong, want) || locked != 2*guesses-maxTries || len(other) > 0 {
		t.Errorf("%d concurrent wrong guesses = tries left %v, %d locked, other errors %v; want %v, %d locked, none",
			2*guesses, wrong, locked, other, want, 2*guesses-maxTries)
	}
	if got := tries(t, s1); got != 0 {
		t.Errorf("stored tries = %d, want 0", got)
	}
}

// TestStoredParameters: a record keeps the iteration count it was made
// with; a damaged record is an error, never a match.
func TestStoredParameters(t *testing.T) {
	s, _ := newStore(t, 3) // made with testIterations
	defer s.Close()
	auth.PINIterations = 2 * testIterations
	t.Cleanup(func() { auth.PINIterations = testIterations })
	if n, err := auth.VerifyOnlinePIN(t.Context(), s, card, rightPIN, now); err != nil || n != 3 {
		t.Errorf("VerifyOnlinePIN(right PIN) after raising PINIterations = %d, %v, want 3, nil", n, err)
	}
	good, err := s.PIN(t.Context(), card)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		damage func(p *store.PIN)
	}{
		{"unknown algorithm", func(p *store.PIN) { p.Params = "scrypt:N=16384" }},
		{"no count", func(p *store.PIN) { p.Params = "pbkdf2-sha256:i=" }},
		{"zero count", func(p *store.PIN) { p.Params = "pbkdf2-sha256:i=0" }},
		{"negative count", func(p *store.PIN) { p.Params = "pbkdf2-sha256:i=-1" }},
		{"leading zero", func(p *store.PIN) { p.Params = "pbkdf2-sha256:i=01000" }},
		{"huge count", func(p *store.PIN) { p.Params = "pbkdf2-sha256:i=999999999999" }},
		{"other count", func(p *store.PIN) { p.Params = "pbkdf2-sha256:i=1001" }},
		{"short hash", func(p *store.PIN) { p.Hash = p.Hash[:16] }},
		{"empty hash", func(p *store.PIN) { p.Hash = nil }},
	} {
		p := good
		p.Hash = slices.Clone(good.Hash)
		tc.damage(&p)
		if err := s.SetPIN(t.Context(), p); err != nil {
			t.Fatal(err)
		}
		n, err := auth.VerifyOnlinePIN(t.Context(), s, card, rightPIN, now)
		if err == nil {
			t.Errorf("VerifyOnlinePIN(right PIN, %s) = %d, nil, want an error", tc.name, n)
		}
		if got := tries(t, s); got != 2 {
			t.Errorf("%s: stored tries = %d, want 2 (the try was taken first)", tc.name, got)
		}
	}
}

func TestHashPIN(t *testing.T) {
	salt := bytes.Repeat([]byte{7}, auth.PINSaltSize)
	h := auth.HashPIN("1234", salt)
	want, err := pbkdf2.Key(sha256.New, "1234", salt, testIterations, 32)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(h, want) {
		t.Errorf("HashPIN(1234) = %x, want PBKDF2-HMAC-SHA256 %x", h, want)
	}
	if bytes.Equal(auth.HashPIN("1234", append([]byte{8}, salt[1:]...)), h) {
		t.Errorf("HashPIN(1234) with two salts = %x both, want different", h)
	}
	if bytes.Equal(auth.HashPIN("1235", salt), h) {
		t.Errorf("HashPIN of 1234 and 1235 = %x both, want different", h)
	}
	if got, want := auth.PINParams(), "pbkdf2-sha256:i=1000"; got != want {
		t.Errorf("PINParams() = %q, want %q", got, want)
	}
}

func TestNewPINRecord(t *testing.T) {
	h1, s1, err := auth.NewPINRecord("1234")
	if err != nil {
		t.Fatalf("NewPINRecord(1234) = %v", err)
	}
	h2, s2, err := auth.NewPINRecord("1234")
	if err != nil {
		t.Fatal(err)
	}
	if len(s1) != 16 || len(h1) != 32 || bytes.Equal(s1, s2) || bytes.Equal(h1, h2) {
		t.Errorf("NewPINRecord(1234) twice = salts %x, %x, hashes %x, %x; want 16 fresh salt bytes and 32-byte hashes that differ", s1, s2, h1, h2)
	}
	if !bytes.Equal(auth.HashPIN("1234", s1), h1) {
		t.Errorf("HashPIN(1234, salt of NewPINRecord) != its hash")
	}
	for _, pin := range []string{"", "123", "1234567890123", "12 4", "abcd"} {
		if _, _, err := auth.NewPINRecord(pin); !errors.Is(err, auth.ErrMalformedPIN) {
			t.Errorf("NewPINRecord(%q) = %v, want ErrMalformedPIN", pin, err)
		}
	}
	if _, err := auth.NewPIN(card, "1234", 0); err == nil {
		t.Errorf("NewPIN(0 tries) = nil error, want one")
	}
}

func TestPINError(t *testing.T) {
	for _, tc := range []struct {
		left int
		want string
	}{
		{2, "wrong PIN, 2 tries left"},
		{1, "wrong PIN, 1 try left"},
		{0, "wrong PIN, now locked"},
	} {
		e := &auth.PINError{TriesLeft: tc.left}
		if got := e.Error(); got != tc.want || !errors.Is(e, auth.ErrWrongPIN) || errors.Is(e, auth.ErrLocked) {
			t.Errorf("PINError{%d} = %q (Is ErrWrongPIN %v), want %q and ErrWrongPIN only", tc.left, got, errors.Is(e, auth.ErrWrongPIN), tc.want)
		}
	}
}

func TestVerifyPINBlock(t *testing.T) {
	s, _ := newStore(t, 3)
	defer s.Close()
	key := pinblock.SessionKey(bytes.Repeat([]byte{0x42}, 32))
	otherKey := pinblock.SessionKey(bytes.Repeat([]byte{0x43}, 32))
	mk := func(key []byte, pin, pan string) [pinblock.Size]byte {
		b, err := pinblock.Encrypt(key, pin, pan, nil)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		name      string
		block     [pinblock.Size]byte
		want      outcome
		wantTries int
	}{
		{"wrong PIN", mk(key, wrongPIN, card), outcome{2, auth.ErrWrongPIN}, 2},
		{"other session's key", mk(otherKey, rightPIN, card), outcome{0, pinblock.ErrInvalid}, 2},
		{"made for another card", mk(key, rightPIN, "4000000000000002"), outcome{0, pinblock.ErrInvalid}, 2},
		{"garbage", [pinblock.Size]byte{1, 2, 3}, outcome{0, pinblock.ErrInvalid}, 2},
		{"right PIN", mk(key, rightPIN, card), outcome{3, nil}, 3},
	} {
		n, err := auth.VerifyPINBlock(t.Context(), s, card, key, tc.block, now)
		check(t, tc.name, n, err, tc.want)
		if got := tries(t, s); got != tc.wantTries {
			t.Errorf("%s: stored tries = %d, want %d", tc.name, got, tc.wantTries)
		}
	}
}

// BenchmarkHashPIN measures one online PIN hash at DefaultPINIterations:
// the server's cost per verification (the goal is 50-100 ms).
func BenchmarkHashPIN(b *testing.B) {
	auth.PINIterations = auth.DefaultPINIterations
	b.Cleanup(func() { auth.PINIterations = testIterations })
	salt := make([]byte, auth.PINSaltSize)
	b.ReportAllocs()
	for b.Loop() {
		auth.HashPIN("246810", salt)
	}
}

// BenchmarkVerifyOnlinePIN is a whole right-PIN verification on a SQLite
// file at DefaultPINIterations: decrement (a durable write), hash,
// compare, reset (a second durable write).
func BenchmarkVerifyOnlinePIN(b *testing.B) {
	path := filepath.Join(b.TempDir(), "server.db")
	ctx := b.Context()
	s, err := sqlite.Open(ctx, path)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	auth.PINIterations = auth.DefaultPINIterations
	b.Cleanup(func() { auth.PINIterations = testIterations })
	p, err := auth.NewPIN(card, rightPIN, 3)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.PutCard(ctx, store.Card{Number: card, Cert: []byte{0x30}, IssuerKeyID: []byte{1}}, now); err != nil {
		b.Fatal(err)
	}
	if err := s.SetPIN(ctx, p); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := auth.VerifyOnlinePIN(ctx, s, card, rightPIN, now); err != nil {
			b.Fatal(err)
		}
	}
}
