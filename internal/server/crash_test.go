package server_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"cardlink/internal/applet/wallet/wallettest"
	"cardlink/internal/device"
	"cardlink/internal/money"
	"cardlink/internal/protocol"
	"cardlink/internal/server"
	"cardlink/internal/server/api"
	"cardlink/internal/server/auth"
	"cardlink/internal/server/ledger"
	"cardlink/internal/server/purchase"
	"cardlink/internal/server/servertest"
	"cardlink/internal/store"
	"cardlink/internal/store/postgres/pgtest"
)

// Environment of the server child of TestCrashPurchases.
const (
	// envCrashServer, when set to a store URI, makes TestCrashPurchases
	// the child: a device listener with the purchase service and the
	// ledger on that store, until it is killed.
	envCrashServer = "CARDLINK_CRASH_SERVER"
	// envCrashCA names the file with the card issuer's CA certificate
	// (DER) the child's auth service trusts.
	envCrashCA = "CARDLINK_CRASH_CA"
	// envCrashSkew, a time.Duration, sets the child's purchase-service
	// clock ahead of the wall clock: the restarted server, started with
	// a skew past the sweep's grace period (30 s), finds at once the
	// purchases the crash left authorized, as it would 30 s later.
	envCrashSkew = "CARDLINK_CRASH_SKEW"
)

const (
	crashCards   = 8    // cards, each with its own device and worker
	crashRounds  = 3    // loads, each ended by a kill
	crashAcks    = 50   // a round kills the server after this many paid purchases
	crashMaxBuys = 1000 // per worker and round: the load ends even if the kill never comes
	crashDeposit = 10_000_000
	crashMaxPay  = 500 // a purchase is of 1..crashMaxPay cents
	// The clock of round r's server (its purchase service and API) is
	// r·crashSkew ahead of the wall clock: past the sweep's grace period
	// (30 s) and the API's purchase deadline (15 min) after the clock of
	// the server before, so that it settles the approvals that server
	// left, and expires the requests it left pending, in its sweep at
	// start, as it would later. The server after the last round is
	// crashEnd ahead.
	crashSkew = time.Hour
	crashEnd  = crashRounds * crashSkew
	// crashApprovalWrite is the Write on a device's connection that
	// sends the approval: after the handshake, Hello and OfferRequest.
	crashApprovalWrite = 4
	// crashChildLife bounds a server child a failed parent did not kill.
	crashChildLife = 5 * time.Minute
	// crashReady starts the line the child prints when it serves.
	crashReady = "crash-server-ready"
)

var (
	zeroTime  = time.Time{}
	farFuture = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
)

// TestCrashPurchases runs the device listener, the purchase service and
// the ledger in a child process on a real store (an SQLite file;
// PostgreSQL when CARDLINK_TEST_POSTGRES is set), has several cards buy
// from it concurrently, each through its own device, a purchase the
// merchant created through the child's HTTP API, and kills it with
// SIGKILL after a number of purchases were paid while others are in
// flight: in the first round when a device is told it paid, in the later
// ones right after a device sent its approval. Each round restarts the
// server on the store (a new child, whose recovery sweep runs at start)
// and checks that every purchase a device was told was paid is approved.
// After the last round it restarts the server once more and checks that
// no purchase is left authorized or pending, that cards still buy through
// it, that each approved purchase has exactly one ledger transfer
// "purchase:<id>" with the right legs and no other purchase has one, and
// that the balances sum to zero: each holder's is its deposit less its
// approved purchases, the merchant's the sum of them.
//
// The PostgreSQL test server may run with fsync off: a killed process
// loses nothing the operating system was given, so this tests the
// server's commit discipline, not the disk's.
func TestCrashPurchases(t *testing.T) {
	if uri := os.Getenv(envCrashServer); uri != "" {
		crashServer(uri)
		return
	}
	if testing.Short() {
		t.Skip("-short: no crash test")
	}
	tests := []struct {
		name string
		uri  func(t *testing.T) string
	}{
		{"sqlite", func(t *testing.T) string { return "sqlite:" + filepath.Join(t.TempDir(), "crash.db") }},
		{"postgres", func(t *testing.T) string { return pgtest.Schema(t, pgtest.DSN(t), "crash_", 8) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { testCrashPurchases(t, tt.uri(t)) })
	}
}

// crashShop is the parent's view: the store, the cards, their devices and
// every purchase created.
type crashShop struct {
	st       store.Store
	ms       store.Merchants
	lg       *ledger.Ledger
	merchant store.Merchant
	cards    []*wallettest.Env
	ids      []device.Identity // ids[i] is the device of cards[i]
	caFile   string
	apiKey   string // the merchant's
	client   *http.Client

	mu      sync.Mutex
	created map[string]int  // purchase ID → the round it was created in
	acked   map[string]bool // purchases a device was told were paid
}

func testCrashPurchases(t *testing.T, uri string) {
	start := time.Now()
	ctx := context.Background()
	sh := newCrashShop(t, uri)
	t.Logf("setup: %v", time.Since(start).Round(time.Millisecond))
	for r := range crashRounds {
		srv := startCrashServer(t, uri, sh.caFile, time.Duration(r)*crashSkew)
		if r > 0 {
			sh.checkAcked(t)
		}
		sh.load(t, srv, r)
		if t.Failed() {
			return
		}
	}

	srv := startCrashServer(t, uri, sh.caFile, crashEnd)
	sh.checkPurchases(t)
	// The cards still buy through it.
	for i := range sh.cards {
		p, err := sh.newPurchase(srv.api, i, crashRounds)
		if err != nil {
			t.Errorf("card %d: creating a purchase after the restart: %v", i, err)
			continue
		}
		res, err := sh.buy(srv.addr, i, p.Reference, nil)
		if err != nil || res.Code != protocol.CodeOK {
			t.Errorf("card %d: Buy() after the restart = %v, %v; want CodeOK", i, res.Code, err)
			continue
		}
		sh.ack(p.ID)
	}
	srv.kill()
	srv.wait(t)
	sh.checkPurchases(t)
	sh.checkLedger(t, ctx)
	t.Logf("%v in all", time.Since(start).Round(time.Millisecond))
}

// load has every card buy through srv in a loop until the round's kill,
// and logs what the kill left.
func (sh *crashShop) load(t *testing.T, srv *crashChild, round int) {
	start := time.Now()
	var (
		acks     atomic.Int64
		killOnce sync.Once
		killed   atomic.Bool
		cut      atomic.Int64 // Buys that ended in an error, after the kill
		wg       sync.WaitGroup
	)
	kill := func() {
		killOnce.Do(func() {
			killed.Store(true)
			srv.kill()
		})
	}
	// Round 0 kills when a device is told it paid; the others right after
	// a device sent its approval.
	onApproval := func() {
		if round > 0 && acks.Load() >= crashAcks {
			kill()
		}
	}
	for i := range sh.cards {
		wg.Go(func() {
			for range crashMaxBuys {
				if killed.Load() {
					return
				}
				p, err := sh.newPurchase(srv.api, i, round)
				var res device.BuyResult
				if err == nil {
					res, err = sh.buy(srv.addr, i, p.Reference, onApproval)
				}
				switch {
				case err == nil && res.Code == protocol.CodeOK:
					if id, err := purchase.TransactionID(p.ID); err != nil || res.Transaction.ID != id || res.Transaction.Amount.Minor != p.Amount {
						t.Errorf("card %d: Buy(%s) paid transaction %x of %d, want %s of %d", i, p.Reference, res.Transaction.ID, res.Transaction.Amount.Minor, p.ID, p.Amount)
					}
					sh.ack(p.ID)
					if acks.Add(1) >= crashAcks && round == 0 {
						kill()
					}
				case killed.Load():
					// In flight at the kill: refused, cut off, or the
					// server is gone.
					cut.Add(1)
					return
				default:
					t.Errorf("card %d: purchase %q before the kill = %v, %v; want CodeOK", i, p.Reference, res.Code, err)
					kill()
					return
				}
			}
		})
	}
	wg.Wait()
	kill()
	srv.wait(t)
	if n := acks.Load(); n < crashAcks && !t.Failed() {
		t.Fatalf("round %d: %d purchases paid before the load ended, want %d", round, n, crashAcks)
	}
	left := map[store.PurchaseStatus]int{}
	bound, created := 0, 0
	for id, r := range sh.created {
		if r != round {
			continue
		}
		created++
		p := sh.purchase(t, id)
		left[p.Status]++
		if p.Status == store.PurchasePending && p.Card != "" {
			bound++
		}
	}
	t.Logf("round %d: killed after %d paid purchases (%d created, %d Buys cut off) in %v; left %d authorized, %d bound, %d pending unbound, %d approved",
		round, acks.Load(), created, cut.Load(), time.Since(start).Round(time.Millisecond),
		left[store.PurchaseAuthorized], bound, left[store.PurchasePending]-bound, left[store.PurchaseApproved])
}

// newCrashShop creates a merchant with an account, cards known to the
// store, each with a funded holder account and a registered device, and
// the server's key; it writes the cards' CA for the server child.
func newCrashShop(t *testing.T, uri string) *crashShop {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, uri)
	if err != nil {
		t.Fatalf("store.Open = %v", err)
	}
	t.Cleanup(func() { st.Close() })
	sh := &crashShop{st: st, ms: st.(store.Merchants), created: map[string]int{}, acked: map[string]bool{},
		apiKey: rand.Text(), client: &http.Client{Timeout: testTimeout}}
	t.Cleanup(sh.client.CloseIdleConnections)
	sh.lg = ledger.New(st.(store.Ledger), ledger.Options{})
	t.Cleanup(func() { sh.lg.Close() })

	base := servertest.Card(t)
	sh.caFile = filepath.Join(t.TempDir(), "ca.der")
	if err := os.WriteFile(sh.caFile, base.CA.Raw, 0o600); err != nil {
		t.Fatal(err)
	}
	as, err := auth.New(auth.Config{Store: st, CA: base.CA})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := purchase.New(purchase.Config{Store: st, Ledger: sh.lg, Auth: as})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	keyHash := sha256.Sum256([]byte(sh.apiKey))
	sh.merchant = servertest.Merchant(t, sh.lg, sh.ms, store.Merchant{ID: "mer_" + rand.Text(), Name: "Crash Shop", KeyHash: keyHash[:], WebhookSecret: []byte("s"), Created: now})
	pubs, err := server.EnsureKey(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	for i := range crashCards {
		c := base
		if i > 0 {
			c = servertest.Sibling(t, base)
		}
		servertest.PutCard(t, st, c, now)
		if _, err := svc.Deposit(ctx, c.CardNumber, money.Amount{Minor: crashDeposit, Currency: "EUR"}, rand.Text()); err != nil {
			t.Fatalf("Deposit(card %d) = %v", i, err)
		}
		id := servertest.Device(t, st, fmt.Sprint("crash ", i), pubs, "", now)
		sh.cards = append(sh.cards, c)
		sh.ids = append(sh.ids, id)
	}
	return sh
}

// newPurchase creates, in round, a pending request for card i to pay by
// reference, through the merchant API at addr.
func (sh *crashShop) newPurchase(addr string, i, round int) (crashPurchase, error) {
	amount := 1 + int64(randUint32()%crashMaxPay)
	body := fmt.Sprintf(`{"amount":%d,"currency":"EUR","description":"card %d"}`, amount, i)
	req, err := http.NewRequest("POST", "http://"+addr+"/v1/purchases", strings.NewReader(body))
	if err != nil {
		return crashPurchase{}, err
	}
	req.Header.Set("Authorization", "Bearer "+sh.apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := sh.client.Do(req)
	if err != nil {
		return crashPurchase{}, err
	}
	defer resp.Body.Close()
	var p crashPurchase
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil || resp.StatusCode != http.StatusCreated {
		return p, fmt.Errorf("POST /v1/purchases = %s, %v", resp.Status, err)
	}
	p.Amount = amount
	sh.mu.Lock()
	sh.created[p.ID] = round
	sh.mu.Unlock()
	return p, nil
}

// crashPurchase is what the API answers for a purchase created.
type crashPurchase struct {
	ID        string `json:"id"`
	Reference string `json:"reference"`
	Amount    int64  `json:"-"` // as asked
}

func (sh *crashShop) ack(id string) {
	sh.mu.Lock()
	sh.acked[id] = true
	sh.mu.Unlock()
}

// buy has card i pay the purchase of reference through its device,
// calling onApproval, if set, right after the device sent its approval.
func (sh *crashShop) buy(addr string, i int, reference string, onApproval func()) (device.BuyResult, error) {
	nc, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		return device.BuyResult{}, err
	}
	defer nc.Close()
	c := &crashConn{Conn: nc, onApproval: onApproval}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	id := sh.ids[i]
	id.Server = addr
	return device.Buy(ctx, c, id, sh.cards[i].Client, device.BuyOptions{AuthOptions: device.AuthOptions{PIN: wallettest.PIN}, Reference: reference})
}

// crashConn calls onApproval after its crashApprovalWrite-th Write.
type crashConn struct {
	net.Conn
	writes     int
	onApproval func()
}

func (c *crashConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if c.writes++; c.writes == crashApprovalWrite && err == nil && c.onApproval != nil {
		c.onApproval()
	}
	return n, err
}

func (sh *crashShop) purchase(t *testing.T, id string) store.Purchase {
	t.Helper()
	p, err := sh.ms.Purchase(context.Background(), "", id)
	if err != nil {
		t.Fatalf("Purchase(%s) = %v", id, err)
	}
	return p
}

// checkAcked checks, after a restarted server's sweep, that every
// purchase a device was told was paid is approved with a transfer.
func (sh *crashShop) checkAcked(t *testing.T) {
	t.Helper()
	for id := range sh.acked {
		if p := sh.purchase(t, id); p.Status != store.PurchaseApproved || p.Transfer == 0 {
			t.Errorf("purchase %s, paid on the device, is %s with transfer %d; want approved with a transfer", id, p.Status, p.Transfer)
		}
	}
}

// checkPurchases checks, after the restarted server's sweep, that every
// purchase a device was told was paid is approved with a transfer, and
// that every other one ended: approved (paid, the device not told) or
// expired, none left pending or authorized, none declined (the funds
// cover them all).
func (sh *crashShop) checkPurchases(t *testing.T) {
	t.Helper()
	// Also those whose creation the kill cut off: the parent never
	// learned their IDs.
	if ps, err := sh.ms.AuthorizedPurchases(context.Background(), farFuture, 10); err != nil || len(ps) != 0 {
		t.Errorf("AuthorizedPurchases() after the recovery = %d purchases, %v; want none", len(ps), err)
	}
	for id := range sh.created {
		p := sh.purchase(t, id)
		switch {
		case sh.acked[id] && (p.Status != store.PurchaseApproved || p.Transfer == 0):
			t.Errorf("purchase %s, paid on the device, is %s with transfer %d; want approved with a transfer", id, p.Status, p.Transfer)
		case p.Status == store.PurchaseApproved && p.Transfer == 0:
			t.Errorf("purchase %s is approved with no transfer", id)
		case p.Status != store.PurchaseApproved && p.Status != store.PurchaseExpired:
			t.Errorf("purchase %s after the recovery is %s (%s); want approved or expired", id, p.Status, p.Reason)
		}
	}
}

// checkLedger checks every account's entries against its balance, the
// payments against the purchases, and the balances against the deposits
// and the approved purchases.
func (sh *crashShop) checkLedger(t *testing.T, ctx context.Context) {
	t.Helper()
	holders := map[string]int64{} // holder account → approved purchases
	var paid int64
	approved := map[string]store.Purchase{} // by transfer key
	for id := range sh.created {
		p := sh.purchase(t, id)
		if p.Status == store.PurchaseApproved {
			holders[ledger.HolderAccount(p.Card, "EUR")] += p.Amount
			paid += p.Amount
			approved[purchase.TransferKey(id)] = p
		}
	}
	want := map[string]int64{ // balances
		ledger.FundingAccount("EUR"): -crashDeposit * int64(len(sh.cards)),
		sh.merchant.Account:          paid,
	}
	for _, c := range sh.cards {
		h := ledger.HolderAccount(c.CardNumber, "EUR")
		want[h] = crashDeposit - holders[h]
	}
	legs := map[string][]store.Entry{} // purchase transfer key → its entries
	var sum int64
	for a, bal := range want {
		s, err := sh.lg.Statement(ctx, a, zeroTime, farFuture)
		if err != nil {
			t.Fatalf("Statement(%s) = %v", a, err)
		}
		var es int64
		for _, e := range s.Entries {
			es += e.Amount
			if strings.HasPrefix(e.Key, "purchase:") {
				legs[e.Key] = append(legs[e.Key], e)
			}
		}
		if es != s.Account.Balance || s.Closing != s.Account.Balance {
			t.Errorf("account %s: entries sum to %d, closing %d, balance %d; want equal", a, es, s.Closing, s.Account.Balance)
		}
		if s.Account.Balance != bal {
			t.Errorf("account %s: balance %d, want %d", a, s.Account.Balance, bal)
		}
		sum += s.Account.Balance
	}
	if sum != 0 {
		t.Errorf("balances sum to %d, want 0", sum)
	}
	for key, p := range approved {
		es := legs[key]
		holder := ledger.HolderAccount(p.Card, "EUR")
		ok := len(es) == 2
		for _, e := range es {
			ok = ok && e.Transfer == p.Transfer &&
				(e.Account == holder && e.Amount == -p.Amount || e.Account == sh.merchant.Account && e.Amount == p.Amount)
		}
		if !ok || es[0].Account == es[1].Account {
			t.Errorf("transfer %s of the approved purchase (transfer %d, %d from %s) = %+v; want its two legs once", key, p.Transfer, p.Amount, holder, es)
		}
	}
	for key, es := range legs {
		if _, ok := approved[key]; !ok {
			t.Errorf("transfer %s = %+v, of a purchase not approved", key, es)
		}
	}
	t.Logf("%d purchases approved, %d of them paid on the device; %d cents paid", len(approved), len(sh.acked), paid)
}

// crashChild is a running server child.
type crashChild struct {
	cmd  *exec.Cmd
	addr string        // the device listener's
	api  string        // the HTTP API's
	done chan struct{} // closed when its output ended
}

// startCrashServer starts a server child on uri, its purchase clock skew
// ahead, and waits until it serves. The test's cleanup kills it.
func startCrashServer(t *testing.T, uri, caFile string, skew time.Duration) *crashChild {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashPurchases$", "-test.count=1")
	cmd.Env = append(os.Environ(), envCrashServer+"="+uri, envCrashCA+"="+caFile, envCrashSkew+"="+skew.String())
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("StdoutPipe = %v", err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting server child: %v", err)
	}
	c := &crashChild{cmd: cmd, done: make(chan struct{})}
	t.Cleanup(func() {
		c.kill()
		c.wait(t)
	})
	ready := make(chan string, 1)
	go func() {
		defer close(c.done)
		r := bufio.NewReader(out)
		for {
			line, err := r.ReadString('\n')
			if addr, ok := strings.CutPrefix(strings.TrimSpace(line), crashReady+" "); ok && err == nil {
				ready <- addr
			}
			if err != nil {
				return
			}
		}
	}()
	select {
	case addrs := <-ready:
		c.addr, c.api, _ = strings.Cut(addrs, " ")
	case <-c.done:
		t.Fatal("server child ended before serving")
	}
	return c
}

// kill sends SIGKILL to the child (again: harmless).
func (c *crashChild) kill() { c.cmd.Process.Signal(syscall.SIGKILL) }

// wait waits for the child to end, and checks that it was killed: it
// must not end by itself.
func (c *crashChild) wait(t *testing.T) {
	t.Helper()
	<-c.done
	if c.cmd.ProcessState != nil {
		return // waited for already
	}
	err := c.cmd.Wait()
	if ws, ok := c.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("server child ended with %v, want killed", err)
	}
}

// crashServer is the child: it runs the recovery sweep and then serves
// devices on the store uri names until it is killed (or crashChildLife
// passed). It prints crashReady and the address once it serves.
func crashServer(uri string) {
	ctx := context.Background()
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "crash server:", err)
		os.Exit(2)
	}
	time.AfterFunc(crashChildLife, func() { fail(errors.New("not killed in time")) })
	skew, err := time.ParseDuration(os.Getenv(envCrashSkew))
	if err != nil {
		fail(err)
	}
	der, err := os.ReadFile(os.Getenv(envCrashCA))
	if err != nil {
		fail(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		fail(err)
	}
	st, err := store.Open(ctx, uri)
	if err != nil {
		fail(err)
	}
	if _, err := server.EnsureKey(ctx, st); err != nil {
		fail(err)
	}
	as, err := auth.New(auth.Config{Store: st, CA: ca})
	if err != nil {
		fail(err)
	}
	lg := ledger.New(st.(store.Ledger), ledger.Options{})
	now := func() time.Time { return time.Now().Add(skew) }
	svc, err := purchase.New(purchase.Config{Store: st, Ledger: lg, Auth: as, Now: now})
	if err != nil {
		fail(err)
	}
	// Recovery, as the server's sweep loop does at start and then every
	// 10 s: each Sweep takes a batch. 30 s is the sweep's grace period.
	for i := 0; ; i++ {
		if i == 100 {
			fail(errors.New("purchases left authorized after 100 sweeps"))
		}
		if err := svc.Sweep(ctx); err != nil {
			fail(err)
		}
		ps, err := st.(store.Merchants).AuthorizedPurchases(ctx, time.Now().Add(skew-30*time.Second), 1)
		if err != nil {
			fail(err)
		}
		if len(ps) == 0 {
			break
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail(err)
	}
	al, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail(err)
	}
	h := api.New(api.Config{Store: st, Auth: as, Now: now, Purchases: svc, Ledger: lg})
	go func() { fail(http.Serve(al, h)) }()
	go svc.Run(ctx, 0)
	fmt.Printf("%s %s %s\n", crashReady, l.Addr(), al.Addr())
	fail(server.New(server.Config{Auth: as, Store: st, Purchases: svc}).Serve(ctx, l))
}

func randUint32() uint32 {
	var b [4]byte
	rand.Read(b[:])
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}
