package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"cardlink/internal/device"
	"cardlink/internal/money"
	"cardlink/internal/protocol"
	"cardlink/internal/txn"
)

// TestAPIClientDo checks that answers of the API become one error line
// with the problem's detail and a hint, and that requests carry the key,
// the body and the headers.
func TestAPIClientDo(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		body      string
		kind      keyKind
		notFound  string
		wantErr   string // "" for success
		wantHints []string
	}{
		{name: "ok", status: 201, body: `{"id":"x"}`},
		{
			name:   "problem",
			status: 422, body: `{"type":"https://cardlink.dev/problems/invalid-request","title":"Invalid request","status":422,"detail":"price must be positive."}`,
			wantErr:   "testing: price must be positive",
			wantHints: []string{"the server answered 422 Invalid request (invalid-request)"},
		},
		{
			name:   "unauthorized merchant",
			status: 401, body: `{"type":"https://cardlink.dev/problems/unauthorized","title":"Missing or invalid API key","status":401,"detail":"This endpoint needs a merchant's API key."}`,
			wantErr:   "testing: This endpoint needs a merchant's API key",
			wantHints: []string{"the server refused the merchant key; " + merchantKeyKind.hint()},
		},
		{
			name:   "unauthorized operator",
			status: 401, body: `{"type":"https://cardlink.dev/problems/unauthorized","title":"Missing or invalid API key","status":401}`,
			kind:      operatorKeyKind,
			wantErr:   "testing: Missing or invalid API key",
			wantHints: []string{"the server refused the operator key; " + operatorKeyKind.hint()},
		},
		{
			name:   "refund too large",
			status: 422, body: `{"type":"https://cardlink.dev/problems/refund-too-large","title":"Refund too large","status":422,"detail":"The refunds would exceed the amount paid."}`,
			wantErr:   "testing: The refunds would exceed the amount paid",
			wantHints: []string{"see what was refunded already with 'cardlink merchant refunds ID'"},
		},
		{
			name:   "not found with the call's hint",
			status: 404, body: `{"type":"https://cardlink.dev/problems/not-found","title":"Not found","status":404,"detail":"No such card."}`,
			notFound:  "use the card once",
			wantErr:   "testing: No such card",
			wantHints: []string{"use the card once"},
		},
		{
			name: "not a problem", status: 502, body: `<html>bad gateway</html>`,
			wantErr:   "testing: server answered 502 Bad Gateway",
			wantHints: []string{"the server answered 502 Bad Gateway"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var gotAuth, gotIdem, gotBody, gotQuery string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				gotAuth, gotIdem, gotQuery = r.Header.Get("Authorization"), r.Header.Get("Idempotency-Key"), r.URL.RawQuery
				b, _ := io.ReadAll(r.Body)
				gotBody = string(b)
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			}))
			defer srv.Close()
			cl := &apiClient{base: srv.URL, key: "k1", kind: tt.kind, hc: srv.Client()}
			b, _, err := cl.do(context.Background(), apiCall{method: "POST", path: "/v1/x", query: map[string][]string{"format": {"csv"}},
				body: map[string]int{"amount": 1250}, header: map[string]string{"Idempotency-Key": "i1"}, what: "testing", notFound: tt.notFound})
			if gotAuth != "Bearer k1" || gotIdem != "i1" || gotBody != `{"amount":1250}` || gotQuery != "format=csv" {
				t.Errorf("request: Authorization %q, Idempotency-Key %q, body %q, query %q; want Bearer k1, i1, {\"amount\":1250}, format=csv",
					gotAuth, gotIdem, gotBody, gotQuery)
			}
			if tt.wantErr == "" {
				if err != nil || string(b) != tt.body {
					t.Errorf("do() = %q, %v, want %q, nil", b, err, tt.body)
				}
				return
			}
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("do() error = %v, want %q", err, tt.wantErr)
			}
			var h *hintError
			if !errors.As(err, &h) || !slices.Equal(h.hints, tt.wantHints) {
				t.Errorf("do() hints = %q, want %q", hintsOf(err), tt.wantHints)
			}
			if !isAPIStatus(err, tt.status) {
				t.Errorf("isAPIStatus(do() error, %d) = false, want true", tt.status)
			}
		})
	}
}

func hintsOf(err error) []string {
	var h *hintError
	if errors.As(err, &h) {
		return h.hints
	}
	return nil
}

// TestAPIClientUnreachable checks the hint for a server that is not
// there.
func TestAPIClientUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	base := srv.URL
	srv.Close()
	cl := &apiClient{base: base, key: "k", hc: &http.Client{Timeout: 5 * time.Second}}
	_, _, err := cl.do(context.Background(), apiCall{method: "GET", path: "/v1/items", what: "listing items"})
	if err == nil || !strings.HasPrefix(err.Error(), "listing items: ") {
		t.Fatalf("do() error = %v, want one starting with \"listing items: \"", err)
	}
	if h := hintsOf(err); len(h) != 1 || !strings.Contains(h[0], "is 'cardlink server' running") {
		t.Errorf("do() hints = %q, want one asking whether the server runs", h)
	}
}

func TestParseAmountFlag(t *testing.T) {
	tests := []struct {
		name, amount, cur string
		want              money.Amount
		wantErr           string
	}{
		{name: "euros and cents", amount: "12.50", cur: "EUR", want: money.Amount{Minor: 1250, Currency: "EUR"}},
		{name: "whole", amount: "12", cur: "EUR", want: money.Amount{Minor: 1200, Currency: "EUR"}},
		{name: "lower-case currency", amount: "0.05", cur: "eur", want: money.Amount{Minor: 5, Currency: "EUR"}},
		{name: "yen", amount: "1200", cur: "JPY", want: money.Amount{Minor: 1200, Currency: "JPY"}},
		{name: "dinar", amount: "1.005", cur: "BHD", want: money.Amount{Minor: 1005, Currency: "BHD"}},
		{name: "too many digits", amount: "12.505", cur: "EUR", wantErr: `x: --amount "12.505": want a decimal number`},
		{name: "fraction of yen", amount: "1.5", cur: "JPY", wantErr: "want a decimal number"},
		{name: "comma", amount: "12,50", cur: "EUR", wantErr: "want a decimal number"},
		{name: "zero", amount: "0.00", cur: "EUR", wantErr: "want a positive amount"},
		{name: "negative", amount: "-1", cur: "EUR", wantErr: "want a positive amount"},
		{name: "empty", amount: "", cur: "EUR", wantErr: "want a decimal number"},
		{name: "unknown currency", amount: "1", cur: "XYZ", wantErr: "--currency"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseAmountFlag("x", "amount", tt.amount, tt.cur)
			if tt.wantErr != "" {
				var u *usageError
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.As(err, &u) {
					t.Errorf("parseAmountFlag(%q, %q) = %v, %v, want a usage error containing %q", tt.amount, tt.cur, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("parseAmountFlag(%q, %q) = %v, %v, want %v", tt.amount, tt.cur, got, err, tt.want)
			}
		})
	}
	_, err := parseAmountFlag("x", "price", "1.234", "EUR")
	if h := hintsOf(err); len(h) != 1 || h[0] != "give at most 2 fraction digits for EUR, e.g. --price 12.50" {
		t.Errorf("parseAmountFlag(1.234 EUR) hints = %q, want the example hint", h)
	}
}

func TestParseOneArg(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    string
		wait    time.Duration
		wantErr string
	}{
		{name: "alone", args: []string{"pur_1"}, want: "pur_1"},
		{name: "flag before", args: []string{"--wait", "2s", "pur_1"}, want: "pur_1", wait: 2 * time.Second},
		{name: "flag after", args: []string{"pur_1", "--wait", "3s"}, want: "pur_1", wait: 3 * time.Second},
		{name: "missing", args: []string{"--wait", "1s"}, wantErr: "t: missing purchase ID"},
		{name: "two", args: []string{"a", "b"}, wantErr: `t: unexpected argument "b"`},
		{name: "bad flag after", args: []string{"a", "--nope"}, wantErr: "flag provided but not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("cardlink t", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			wait := fs.Duration("wait", 0, "")
			got, err := parseOneArg(fs, tt.args, "purchase ID")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("parseOneArg(%q) = %q, %v, want error containing %q", tt.args, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want || *wait != tt.wait {
				t.Errorf("parseOneArg(%q) = %q, %v (wait %v), want %q (wait %v)", tt.args, got, err, *wait, tt.want, tt.wait)
			}
		})
	}
}

func TestAskYes(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"y\n", true}, {"yes\n", true}, {" Y \n", true}, {"YES", true},
		{"n\n", false}, {"\n", false}, {"", false}, {"yess\n", false}, {"no\ny\n", false},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		got, err := askYes(strings.NewReader(tt.in), &out, "approve? ")
		if err != nil || got != tt.want || out.String() != "approve? " {
			t.Errorf("askYes(%q) = %v, %v (asked %q), want %v, nil (asked \"approve? \")", tt.in, got, err, out.String(), tt.want)
		}
	}
}

func TestDecodeRefunds(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string // ids
		wantErr  bool
	}{
		{name: "object", in: `{"refunds":[{"id":"r1"},{"id":"r2"}]}`, want: []string{"r1", "r2"}},
		{name: "empty object", in: `{"refunds":[]}`, want: nil},
		{name: "bare array", in: `[{"id":"r1"}]`, want: []string{"r1"}},
		{name: "garbage", in: `"x"`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs, err := decodeRefunds([]byte(tt.in))
			var ids []string
			for _, r := range rs {
				ids = append(ids, r.ID)
			}
			if (err != nil) != tt.wantErr || !slices.Equal(ids, tt.want) {
				t.Errorf("decodeRefunds(%s) = %q, %v, want %q (error %v)", tt.in, ids, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestAccountID(t *testing.T) {
	tests := []struct{ in, cur, want string }{
		{"9470000000000002", "EUR", "holder:9470000000000002:EUR"},
		{"9470 0000 0000 0002", "usd", "holder:9470000000000002:USD"},
		{"acct_mer_1", "EUR", "acct_mer_1"},
		{"holder:9470000000000002:EUR", "USD", "holder:9470000000000002:EUR"},
	}
	for _, tt := range tests {
		if got, err := accountID("x", tt.in, tt.cur); err != nil || got != tt.want {
			t.Errorf("accountID(%q, %q) = %q, %v, want %q", tt.in, tt.cur, got, err, tt.want)
		}
	}
}

func TestWithHintKeepsEarlierHints(t *testing.T) {
	err := withHint(withHint(errors.New("boom"), "first"), "second")
	if got := hintsOf(err); !slices.Equal(got, []string{"first", "second"}) {
		t.Errorf("hints = %q, want [first second]", got)
	}
	if err.Error() != "boom" {
		t.Errorf("Error() = %q, want boom", err.Error())
	}
}

func TestBuyResult(t *testing.T) {
	tr := txn.Transaction{Merchant: "Corner Cafe", Item: "Tea", Amount: money.Amount{Minor: 200, Currency: "EUR"}}
	tests := []struct {
		name     string
		res      device.BuyResult
		ref      string
		wantOut  string
		wantErr  string
		wantHint string
	}{
		{
			name: "paid with goods",
			res: device.BuyResult{CardNumber: "9470000000000002", Transaction: tr, Code: protocol.CodeOK, CVM: txn.CVMOfflinePIN, Counter: 7,
				Goods: []txn.Item{{Kind: txn.ItemVoucher, Title: "Tea", Content: []byte("T-1")}}},
			wantOut: "paid 2.00 EUR to Corner Cafe: offline PIN\ncard 9470000000000002 counter 7\nstored on the card: voucher \"Tea\" (3 bytes)\n",
		},
		{
			name: "paid before, goods again",
			res: device.BuyResult{CardNumber: "9470000000000002", Code: protocol.CodeOK, CVM: txn.CVMOfflinePIN, PaidBefore: true,
				Goods: []txn.Item{{Kind: txn.ItemVoucher, Title: "Tea", Content: []byte("T-1")}}},
			wantOut: "paid before; goods delivered again\ncard 9470000000000002\nstored on the card: voucher \"Tea\" (3 bytes)\n",
		},
		{
			name:    "declined by the holder",
			res:     device.BuyResult{Transaction: tr, Code: protocol.CodeHolderDeclined},
			wantErr: "2.00 EUR to Corner Cafe not paid: declined by card holder",
		},
		{
			name:    "online PIN wrong",
			res:     device.BuyResult{Transaction: tr, Code: protocol.CodePINIncorrect, TriesLeft: 2},
			wantErr: "2.00 EUR to Corner Cafe not paid: PIN incorrect (2 tries left)",
		},
		{
			name:     "funds",
			res:      device.BuyResult{Transaction: tr, Code: protocol.CodeInsufficientFunds},
			wantErr:  "2.00 EUR to Corner Cafe not paid: insufficient funds",
			wantHint: "the holder's account cannot pay it: an operator deposits with 'cardlink account deposit'",
		},
		{
			name:     "unknown, pushed",
			res:      device.BuyResult{Code: protocol.CodeTransactionUnknown},
			wantErr:  "not paid: transaction unknown",
			wantHint: unknownHint(""),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := buyResult(&out, tt.res, tt.ref)
			if out.String() != tt.wantOut {
				t.Errorf("buyResult() printed %q, want %q", out.String(), tt.wantOut)
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Errorf("buyResult() = %v, want nil", err)
				}
				return
			}
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("buyResult() = %v, want %q", err, tt.wantErr)
			}
			if h := hintsOf(err); tt.wantHint != "" && (len(h) != 1 || h[0] != tt.wantHint) {
				t.Errorf("buyResult() hints = %q, want %q", h, tt.wantHint)
			}
		})
	}
}
