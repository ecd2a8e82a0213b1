package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"cardlink/internal/applet/wallet"
	"cardlink/internal/applet/wallet/wallettest"
	"cardlink/internal/protocol"
	"cardlink/internal/server/servertest"
	"cardlink/internal/store"
	"cardlink/internal/txn"
)

// TestBiometricConstants keeps the server's template format the card's.
func TestBiometricConstants(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want int
	}{
		{"BiometricSize", BiometricSize, wallet.BioTemplateLen},
		{"DefaultBiometricThreshold", DefaultBiometricThreshold, wallet.DefaultBioThreshold},
		{"MaxBiometricThreshold", MaxBiometricThreshold, wallet.MaxBioThreshold},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want the wallet applet's %d", c.name, c.got, c.want)
		}
	}
}

func TestMatchBiometric(t *testing.T) {
	tmpl := wallettest.Template()
	tests := []struct {
		name      string
		enrolled  []byte
		presented []byte
		threshold int
		want      bool
	}{
		{"same", tmpl, tmpl, 0, true},
		{"at the threshold", tmpl, wallettest.Sample(tmpl, 64), 64, true},
		{"one bit over", tmpl, wallettest.Sample(tmpl, 65), 64, false},
		{"one bit, threshold 0", tmpl, wallettest.Sample(tmpl, 1), 0, false},
		{"every bit", tmpl, wallettest.Sample(tmpl, 512), MaxBiometricThreshold, false},
		{"every bit, huge threshold", tmpl, wallettest.Sample(tmpl, 512), 1 << 40, true},
		{"last byte differs", tmpl, append(bytes.Clone(tmpl[:63]), ^tmpl[63]), 7, false},
		{"last byte differs, within", tmpl, append(bytes.Clone(tmpl[:63]), ^tmpl[63]), 8, true},
		{"negative threshold", tmpl, tmpl, -1, false},
		{"short presented", tmpl, tmpl[:63], 64, false},
		{"long presented", tmpl, append(bytes.Clone(tmpl), 0), 64, false},
		{"short enrolled", tmpl[:32], tmpl[:32], 64, false},
		{"nil", nil, nil, 64, false},
	}
	for _, tt := range tests {
		if got := MatchBiometric(tt.enrolled, tt.presented, tt.threshold); got != tt.want {
			t.Errorf("MatchBiometric(%s) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestNewBiometric(t *testing.T) {
	tmpl := wallettest.Template()
	tests := []struct {
		name       string
		template   []byte
		threshold  int
		tries      int
		wantErrors bool
	}{
		{"defaults", tmpl, DefaultBiometricThreshold, DefaultBiometricTries, false},
		{"threshold 0, 1 try", tmpl, 0, 1, false},
		{"largest", tmpl, MaxBiometricThreshold, MaxBiometricTries, false},
		{"short template", tmpl[:63], 64, 5, true},
		{"long template", append(bytes.Clone(tmpl), 1), 64, 5, true},
		{"negative threshold", tmpl, -1, 5, true},
		{"threshold too high", tmpl, MaxBiometricThreshold + 1, 5, true},
		{"no tries", tmpl, 64, 0, true},
		{"too many tries", tmpl, 64, MaxBiometricTries + 1, true},
	}
	for _, tt := range tests {
		b, err := NewBiometric("4000001234567899", tt.template, tt.threshold, tt.tries)
		if tt.wantErrors {
			if !errors.Is(err, ErrMalformedBiometric) {
				t.Errorf("NewBiometric(%s) = %v, want %v", tt.name, err, ErrMalformedBiometric)
			}
			continue
		}
		if err != nil || b.Card != "4000001234567899" || !bytes.Equal(b.Template, tt.template) ||
			b.Threshold != tt.threshold || b.Tries != tt.tries || b.MaxTries != tt.tries {
			t.Errorf("NewBiometric(%s) = %+v, %v; want the record", tt.name, b, err)
		}
	}
	// The record does not alias the caller's template.
	in := bytes.Clone(tmpl)
	b, _ := NewBiometric("4000001234567899", in, 64, 5)
	in[0] ^= 1
	if !bytes.Equal(b.Template, tmpl) {
		t.Errorf("NewBiometric kept the caller's slice")
	}
}

// TestVerifyBiometric follows the try counter through matches,
// mismatches and the lock, on a real SQLite store.
func TestVerifyBiometric(t *testing.T) {
	ctx := context.Background()
	st := servertest.OpenSQLite(t, filepath.Join(t.TempDir(), "bio.db"))
	const card = "4000001234567899"
	tmpl := wallettest.Template()
	_, err := VerifyBiometric(ctx, st, card, tmpl, testStart)
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("VerifyBiometric(no template) = %v, want %v", err, store.ErrNotFound)
	}
	if err := st.PutCard(ctx, store.Card{Number: card, Cert: []byte{1}, IssuerKeyID: []byte{2}}, testStart); err != nil {
		t.Fatalf("PutCard = %v", err)
	}
	b, err := NewBiometric(card, tmpl, 32, 3)
	if err != nil {
		t.Fatalf("NewBiometric = %v", err)
	}
	if err := st.SetBiometric(ctx, b); err != nil {
		t.Fatalf("SetBiometric = %v", err)
	}
	steps := []struct {
		name      string
		presented []byte
		wantTries int
		wantErr   error // nil: matched
		stored    int   // tries stored after the step
	}{
		{"far", wallettest.Sample(tmpl, 200), 2, ErrBiometricMismatch, 2},
		{"within", wallettest.Sample(tmpl, 32), 3, nil, 3},
		{"just over", wallettest.Sample(tmpl, 33), 2, ErrBiometricMismatch, 2},
		{"wrong size", tmpl[:40], 0, ErrMalformedBiometric, 2},
		{"far", wallettest.Sample(tmpl, 100), 1, ErrBiometricMismatch, 1},
		{"far", wallettest.Sample(tmpl, 100), 0, ErrBiometricMismatch, 0},
		{"right but locked", tmpl, 0, ErrLocked, 0},
	}
	for i, s := range steps {
		tries, err := VerifyBiometric(ctx, st, card, s.presented, testStart)
		if tries != s.wantTries || !errors.Is(err, s.wantErr) || (s.wantErr == nil && err != nil) {
			t.Fatalf("step %d: VerifyBiometric(%s) = %d, %v; want %d, %v", i, s.name, tries, err, s.wantTries, s.wantErr)
		}
		var be *BiometricError
		if errors.Is(err, ErrBiometricMismatch) && (!errors.As(err, &be) || be.TriesLeft != s.wantTries) {
			t.Fatalf("step %d: VerifyBiometric(%s) = %v, want a *BiometricError with %d tries", i, s.name, err, s.wantTries)
		}
		if got, err := st.Biometric(ctx, card); err != nil || got.Tries != s.stored {
			t.Fatalf("step %d: Biometric().Tries = %d, %v; want %d", i, got.Tries, err, s.stored)
		}
	}
}

// enrollBio registers env's card with the server and enrolls its template
// for server-side matching.
func (r *rig) enrollBio(env *wallettest.Env, threshold, maxTries int) {
	r.t.Helper()
	c := store.Card{Number: env.CardNumber, Cert: env.CardCert.Raw, IssuerKeyID: env.CA.SubjectKeyId}
	if err := r.st.PutCard(r.ctx, c, r.clock.Now()); err != nil {
		r.t.Fatalf("PutCard = %v", err)
	}
	b, err := NewBiometric(env.CardNumber, env.BioTemplate, threshold, maxTries)
	if err != nil {
		r.t.Fatalf("NewBiometric = %v", err)
	}
	if err := r.st.SetBiometric(r.ctx, b); err != nil {
		r.t.Fatalf("SetBiometric = %v", err)
	}
}

// bioAnswer has the card sign ch with CVM none, as a device does for
// server-side matching, and attaches presented.
func (r *rig) bioAnswer(sess *Session, presented []byte) *protocol.AuthResponse {
	r.t.Helper()
	resp := r.answer(r.env, r.challenge(r.svc, sess, r.env), holderNone, "")
	if resp.CVM != txn.CVMNone {
		r.t.Fatalf("card signed %v, want none", resp.CVM)
	}
	resp.Biometric = presented
	return wire(r.t, resp)
}

func (r *rig) bioTries() int {
	r.t.Helper()
	b, err := r.st.Biometric(r.ctx, r.env.CardNumber)
	if err != nil {
		r.t.Fatalf("Biometric = %v", err)
	}
	return b.Tries
}

func serverBio(c *Config) { c.ServerBiometric = true }

// TestServerBiometricMatch: a sample near the enrolled template is
// accepted as CVM biometric, approves the pending request and says the
// server matched it.
func TestServerBiometricMatch(t *testing.T) {
	r := newRig(t, serverBio)
	r.enrollBio(r.env, DefaultBiometricThreshold, DefaultBiometricTries)
	r.addRequest("req-1", "", "biometric")
	sess := r.session()
	resp := r.bioAnswer(sess, wallettest.Sample(r.env.BioTemplate, 40))
	res := r.verify(r.svc, sess, resp)
	if res.Code != protocol.CodeOK || res.CVM != txn.CVMBiometric {
		t.Fatalf("Verify(server biometric) = {%v, %v}, want {%v, %v}", res.Code, res.CVM, protocol.CodeOK, txn.CVMBiometric)
	}
	req, err := r.st.AuthRequest(r.ctx, "req-1")
	if err != nil || req.Status != store.AuthApproved {
		t.Fatalf("AuthRequest = %v, %v; want approved", req.Status, err)
	}
	var a Approval
	if err := json.Unmarshal(req.Result, &a); err != nil {
		t.Fatalf("Result %s: %v", req.Result, err)
	}
	want := Approval{Card: r.env.CardNumber, CVM: "biometric", Counter: resp.Counter, Device: r.dev.ID, At: r.clock.Now(), MatchedBy: "server"}
	if a != want {
		t.Errorf("Result = %+v, want %+v", a, want)
	}
	if n := r.bioTries(); n != DefaultBiometricTries {
		t.Errorf("tries after a match = %d, want %d", n, DefaultBiometricTries)
	}
	// The card's own match is still told apart.
	r.addRequest("req-2", "", "biometric")
	sess2 := r.session()
	resp2 := r.answer(r.env, r.challenge(r.svc, sess2, r.env), holderBiometric, "")
	checkResult(t, "card-matched biometric", r.verify(r.svc, sess2, resp2), protocol.CodeOK)
	req2, _ := r.st.AuthRequest(r.ctx, "req-2")
	if !bytes.Contains(req2.Result, []byte(`"cvm":"biometric"`)) || bytes.Contains(req2.Result, []byte("matched_by")) {
		t.Errorf("Result of a card-matched biometric = %s, want cvm biometric without matched_by", req2.Result)
	}
}

// TestServerBiometricLockout: mismatches take tries down to the lock; a
// match on the way restores them; once locked even the right template is
// refused.
func TestServerBiometricLockout(t *testing.T) {
	r := newRig(t, serverBio)
	r.enrollBio(r.env, 32, 3)
	tmpl := r.env.BioTemplate
	steps := []struct {
		name      string
		presented []byte
		want      protocol.Code
		triesLeft uint8
		stored    int
	}{
		{"other finger", wallettest.Sample(tmpl, 256), protocol.CodeBiometricMismatch, 2, 2},
		{"same finger", wallettest.Sample(tmpl, 20), protocol.CodeOK, 0, 3},
		{"just over", wallettest.Sample(tmpl, 33), protocol.CodeBiometricMismatch, 2, 2},
		{"too short", tmpl[:32], protocol.CodeMalformed, 0, 2},
		{"too long", append(bytes.Clone(tmpl), tmpl...), protocol.CodeMalformed, 0, 2},
		{"other finger", wallettest.Sample(tmpl, 256), protocol.CodeBiometricMismatch, 1, 1},
		{"other finger", wallettest.Sample(tmpl, 100), protocol.CodeBiometricMismatch, 0, 0},
		{"same finger, locked", tmpl, protocol.CodeBiometricMismatch, 0, 0},
	}
	sess := r.session()
	for i, s := range steps {
		res := r.verify(r.svc, sess, r.bioAnswer(sess, s.presented))
		if res.Code != s.want || res.TriesLeft != s.triesLeft {
			t.Errorf("step %d: Verify(%s) = {%v, tries %d}, want {%v, %d}", i, s.name, res.Code, res.TriesLeft, s.want, s.triesLeft)
		}
		if n := r.bioTries(); n != s.stored {
			t.Errorf("step %d: stored tries after %s = %d, want %d", i, s.name, n, s.stored)
		}
	}
}

// TestServerBiometricRefusals: what server-side matching refuses, and
// that none of it takes a try.
func TestServerBiometricRefusals(t *testing.T) {
	tests := []struct {
		name    string
		enabled bool
		enroll  bool
		policy  string // of a pending request; "" for none
		resp    func(r *rig, sess *Session) *protocol.AuthResponse
		want    protocol.Code
	}{
		{"disabled", false, true, "", func(r *rig, sess *Session) *protocol.AuthResponse {
			return r.bioAnswer(sess, r.env.BioTemplate)
		}, protocol.CodeCVMNotAccepted},
		{"disabled, policy none", false, true, "none,biometric", func(r *rig, sess *Session) *protocol.AuthResponse {
			return r.bioAnswer(sess, r.env.BioTemplate)
		}, protocol.CodeCVMNotAccepted},
		{"card signed biometric too", true, true, "", func(r *rig, sess *Session) *protocol.AuthResponse {
			resp := r.answer(r.env, r.challenge(r.svc, sess, r.env), holderBiometric, "")
			resp.Biometric = r.env.BioTemplate
			return resp
		}, protocol.CodeCVMNotAccepted},
		{"card signed offline PIN", true, true, "", func(r *rig, sess *Session) *protocol.AuthResponse {
			resp := r.answer(r.env, r.challenge(r.svc, sess, r.env), holderOfflinePIN, "")
			resp.Biometric = r.env.BioTemplate
			return resp
		}, protocol.CodeCVMNotAccepted},
		{"policy without biometric", true, true, "offline-pin,online-pin", func(r *rig, sess *Session) *protocol.AuthResponse {
			return r.bioAnswer(sess, r.env.BioTemplate)
		}, protocol.CodeCVMNotAccepted},
		{"nothing enrolled", true, false, "", func(r *rig, sess *Session) *protocol.AuthResponse {
			return r.bioAnswer(sess, r.env.BioTemplate)
		}, protocol.CodeCVMNotAccepted},
		{"template stripped", true, true, "biometric", func(r *rig, sess *Session) *protocol.AuthResponse {
			return r.bioAnswer(sess, nil)
		}, protocol.CodeCVMNotAccepted},
		{"template and PIN block", true, true, "", func(r *rig, sess *Session) *protocol.AuthResponse {
			resp := r.bioAnswer(sess, r.env.BioTemplate)
			resp.PINBlock = bytes.Repeat([]byte{1}, protocol.PINBlockLen)
			return resp
		}, protocol.CodeCVMNotAccepted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, func(c *Config) { c.ServerBiometric = tt.enabled })
			if tt.enroll {
				r.enrollBio(r.env, DefaultBiometricThreshold, 3)
			}
			if tt.policy != "" {
				r.addRequest("req-1", "", tt.policy)
			}
			sess := r.session()
			checkResult(t, tt.name, r.verify(r.svc, sess, tt.resp(r, sess)), tt.want)
			if tt.enroll {
				if n := r.bioTries(); n != 3 {
					t.Errorf("tries after %s = %d, want 3 (none taken)", tt.name, n)
				}
			}
			if req, err := r.st.AuthRequest(r.ctx, "req-1"); err == nil && req.Status != store.AuthPending {
				t.Errorf("request after %s = %v, want pending", tt.name, req.Status)
			}
		})
	}
}

// TestServerBiometricOtherSession: an answer with a good template,
// replayed in another session (another channel) or again in its own,
// gets nothing and takes no try. The template itself is no secret: what
// binds it to this authentication is the channel it came in, whose
// handshake hash the card signed.
func TestServerBiometricOtherSession(t *testing.T) {
	r := newRig(t, serverBio)
	r.enrollBio(r.env, DefaultBiometricThreshold, 3)
	sessA, sessB := r.session(), r.session()
	resp := r.bioAnswer(sessA, r.env.BioTemplate)

	// Session B asked for its own challenge: the card's answer in A is not
	// one of B's.
	r.challenge(r.svc, sessB, r.env)
	checkResult(t, "A's answer in session B", r.verify(r.svc, sessB, resp), protocol.CodeChallengeUnknown)
	if n := r.bioTries(); n != 3 {
		t.Errorf("tries after the replay in B = %d, want 3", n)
	}
	checkResult(t, "A's answer in A", r.verify(r.svc, sessA, resp), protocol.CodeOK)
	checkResult(t, "A's answer in A again", r.verify(r.svc, sessA, resp), protocol.CodeChallengeUnknown)

	// The template moved onto a signature made for session B's challenge
	// but presented in session A: the challenge is B's.
	respB := r.bioAnswer(sessB, nil)
	respB.Biometric = resp.Biometric
	checkResult(t, "B's signature with A's template, in A", r.verify(r.svc, sessA, respB), protocol.CodeChallengeUnknown)
	if n := r.bioTries(); n != 3 {
		t.Errorf("tries after the replays = %d, want 3", n)
	}
}

// TestVerifyBiometricConcurrent: two server instances on one database
// take tries for the same card at once; together they never take more
// than the record has, and every attempt is answered. (Through Verify the
// card's counter would order the answers; the race is the store's.)
func TestVerifyBiometricConcurrent(t *testing.T) {
	r := newRig(t, serverBio)
	const tries = 4
	r.enrollBio(r.env, DefaultBiometricThreshold, tries)
	st2 := servertest.OpenSQLite(t, r.path)
	const n = 2 * tries
	left := make([]int, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		st := r.st
		if i%2 == 1 {
			st = st2
		}
		wg.Go(func() {
			left[i], errs[i] = VerifyBiometric(r.ctx, st, r.env.CardNumber, wallettest.Sample(r.env.BioTemplate, 300), testStart)
		})
	}
	wg.Wait()
	seen := map[string]int{}
	for i := range n {
		switch {
		case errors.Is(errs[i], ErrBiometricMismatch):
			seen[fmt.Sprint(left[i])]++
		case errors.Is(errs[i], ErrLocked):
			seen["locked"]++
		default:
			t.Errorf("VerifyBiometric #%d = %d, %v; want a mismatch or locked", i, left[i], errs[i])
		}
	}
	want := map[string]int{"3": 1, "2": 1, "1": 1, "0": 1, "locked": n - tries}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Errorf("outcomes = %v, want %v", seen, want)
	}
	if got := r.bioTries(); got != 0 {
		t.Errorf("stored tries = %d, want 0", got)
	}
}

// TestServerBiometricLogs: the template is never logged.
func TestServerBiometricLogs(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	r := newRig(t, func(c *Config) {
		c.ServerBiometric = true
		c.Logger = slog.New(slog.NewTextHandler(&lockedWriter{mu: &mu, w: &buf}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	r.enrollBio(r.env, DefaultBiometricThreshold, 3)
	sess := r.session()
	wrong := wallettest.Sample(r.env.BioTemplate, 300)
	checkResult(t, "wrong template", r.verify(r.svc, sess, r.bioAnswer(sess, wrong)), protocol.CodeBiometricMismatch)
	checkResult(t, "right template", r.verify(r.svc, sess, r.bioAnswer(sess, r.env.BioTemplate)), protocol.CodeOK)
	mu.Lock()
	logs := buf.String()
	mu.Unlock()
	for _, tmpl := range [][]byte{r.env.BioTemplate, wrong} {
		for _, enc := range []string{fmt.Sprintf("%x", tmpl[:8]), fmt.Sprintf("%X", tmpl[:8]), string(tmpl[:8])} {
			if strings.Contains(logs, enc) {
				t.Errorf("logs contain template bytes %q:\n%s", enc, logs)
			}
		}
	}
	if !strings.Contains(logs, "matched_by=server") || !strings.Contains(logs, protocol.CodeBiometricMismatch.String()) {
		t.Errorf("logs lack the mismatch and the server match:\n%s", logs)
	}
}

// BenchmarkMatchBiometric measures one constant-time template comparison.
func BenchmarkMatchBiometric(b *testing.B) {
	tmpl := wallettest.Template()
	sample := wallettest.Sample(tmpl, 40)
	b.ReportAllocs()
	for b.Loop() {
		if !MatchBiometric(tmpl, sample, DefaultBiometricThreshold) {
			b.Fatal("MatchBiometric = false, want true")
		}
	}
}

// BenchmarkVerifyBiometric measures a whole server-side match on SQLite:
// the try taken, the comparison and the reset, each durable.
func BenchmarkVerifyBiometric(b *testing.B) {
	ctx := context.Background()
	st := servertest.OpenSQLite(b, filepath.Join(b.TempDir(), "bio.db"))
	const card = "4000001234567899"
	if err := st.PutCard(ctx, store.Card{Number: card, Cert: []byte{1}, IssuerKeyID: []byte{2}}, testStart); err != nil {
		b.Fatalf("PutCard = %v", err)
	}
	tmpl := wallettest.Template()
	rec, _ := NewBiometric(card, tmpl, DefaultBiometricThreshold, DefaultBiometricTries)
	if err := st.SetBiometric(ctx, rec); err != nil {
		b.Fatalf("SetBiometric = %v", err)
	}
	sample := wallettest.Sample(tmpl, 40)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := VerifyBiometric(ctx, st, card, sample, testStart); err != nil {
			b.Fatalf("VerifyBiometric = %v", err)
		}
	}
}
