package ledger_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"cardlink/internal/server/ledger"
	"cardlink/internal/store"
)

// envCrashChild, when set, makes TestCrash the child: it posts transfers
// on the store this URI names until killed, printing each acknowledged one.
const envCrashChild = "CARDLINK_LEDGER_CRASH_CHILD"

const (
	crashHolders = 8
	crashWorkers = 16
	crashAcks    = 3000   // the parent kills the child after this many acknowledgements
	crashMax     = 100000 // the child stops by itself after this many per worker
)

// crashTransfer is worker w's i-th transfer: loads from the float and
// payments to the merchant, alternately.
func crashTransfer(w, i int) ledger.Transfer {
	h := fmt.Sprint("h", w%crashHolders)
	key := fmt.Sprintf("w%d-%d", w, i)
	if i%2 == 0 {
		return move(key, "float", h, 100)
	}
	return move(key, h, "m", 60)
}

// TestCrash runs the ledger in a child process under sustained load,
// kills it with SIGKILL, reopens the store and checks that every
// acknowledged transfer is there exactly once and balances sum to zero.
func TestCrash(t *testing.T) {
	if uri := os.Getenv(envCrashChild); uri != "" {
		crashChild(uri)
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
		{"postgres", func(t *testing.T) string { return pgSchema(t) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			uri := tt.uri(t)
			l, closeStore := openURI(t, uri)
			mustAccount(t, l, "float", store.KindFloat, -1e15)
			mustAccount(t, l, "m", store.KindMerchant, 0)
			for h := range crashHolders {
				mustAccount(t, l, fmt.Sprint("h", h), store.KindHolder, 0)
			}
			l.Close()
			closeStore()

			cmd := exec.Command(os.Args[0], "-test.run=^TestCrash$", "-test.count=1")
			cmd.Env = append(os.Environ(), envCrashChild+"="+uri)
			cmd.Stderr = os.Stderr
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatalf("StdoutPipe = %v", err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatalf("starting child: %v", err)
			}
			acked := map[string]int64{}
			r := bufio.NewReader(out)
			killed := false
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					if !errors.Is(err, io.EOF) {
						t.Errorf("reading child: %v", err)
					}
					break // a line without its newline was not fully acknowledged
				}
				key, id, ok := strings.Cut(strings.TrimSpace(line), " ")
				n, perr := strconv.ParseInt(id, 10, 64)
				if !ok || perr != nil {
					continue // the test framework's own output
				}
				acked[key] = n
				if len(acked) == crashAcks && !killed {
					cmd.Process.Signal(syscall.SIGKILL)
					killed = true
				}
			}
			werr := cmd.Wait()
			if !killed {
				t.Fatalf("child ended after %d acknowledgements (%v), want at least %d", len(acked), werr, crashAcks)
			}
			t.Logf("%d transfers acknowledged before SIGKILL", len(acked))

			l, closeStore = openURI(t, uri)
			defer closeStore()
			defer l.Close()
			// Each acknowledged transfer, posted again, is a replay of the
			// same posting: it is there, once.
			// Posted concurrently, so that they share commits.
			var wg sync.WaitGroup
			sem := make(chan struct{}, 32)
			for key, id := range acked {
				sem <- struct{}{}
				wg.Go(func() {
					defer func() { <-sem }()
					var w, i int
					fmt.Sscanf(key, "w%d-%d", &w, &i)
					p, err := l.Transfer(ctx, crashTransfer(w, i))
					if err != nil || !p.Replayed || p.ID != id {
						t.Errorf("Transfer(%s) again = %+v, %v; want a replay of transfer %d", key, p, err, id)
					}
				})
			}
			wg.Wait()
			// Balances sum to zero and each is the sum of its entries,
			// each transfer appearing once per account.
			accounts := []string{"float", "m"}
			for h := range crashHolders {
				accounts = append(accounts, fmt.Sprint("h", h))
			}
			var sum int64
			seen := map[string]int{}
			for _, a := range accounts {
				s, err := l.Statement(ctx, a, zeroTime, farFuture)
				if err != nil {
					t.Fatalf("Statement(%s) = %v", a, err)
				}
				var es int64
				for _, e := range s.Entries {
					es += e.Amount
					seen[e.Key]++
				}
				if es != s.Account.Balance || s.Closing != s.Account.Balance {
					t.Errorf("account %s: entries sum to %d, closing %d, balance %d; want equal", a, es, s.Closing, s.Account.Balance)
				}
				sum += s.Account.Balance
			}
			if sum != 0 {
				t.Errorf("balances sum to %d, want 0", sum)
			}
			for key := range acked {
				if seen[key] != 2 {
					t.Errorf("transfer %s has %d entries, want 2", key, seen[key])
				}
			}
		})
	}
}

// openURI opens the store a URI names and a ledger on it.
func openURI(t *testing.T, uri string) (*ledger.Ledger, func()) {
	t.Helper()
	s, err := store.Open(context.Background(), uri)
	if err != nil {
		t.Fatalf("store.Open = %v", err)
	}
	return ledger.New(s.(store.Ledger), ledger.Options{}), func() { s.Close() }
}

// crashChild posts transfers from crashWorkers goroutines, printing
// "key id" for each one acknowledged, until it is killed.
func crashChild(uri string) {
	ctx := context.Background()
	s, err := store.Open(ctx, uri)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	l := ledger.New(s.(store.Ledger), ledger.Options{})
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range crashWorkers {
		wg.Go(func() {
			for i := range crashMax {
				p, err := l.Transfer(ctx, crashTransfer(w, i))
				if err != nil {
					continue
				}
				mu.Lock()
				fmt.Fprintf(os.Stdout, "%s %d\n", p.Key, p.ID)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	os.Exit(0)
}
