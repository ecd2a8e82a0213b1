package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"cardlink/internal/device"
	"cardlink/internal/iso7816"
	"cardlink/internal/money"
	"cardlink/internal/protocol"
	"cardlink/internal/txn"
	"cardlink/internal/wallet"
)

func eur(minor int64) money.Amount { return money.Amount{Minor: minor, Currency: "EUR"} }

func TestPurseResult(t *testing.T) {
	purse := func(bal int64, seq uint32) wallet.PurseState {
		return wallet.PurseState{Balance: eur(bal), Seq: seq, Max: eur(100000)}
	}
	tests := []struct {
		name    string
		res     device.PurseResult
		load    bool
		want    string // stdout
		wantErr string // "" for success
		hint    string // a hint the error must carry
	}{
		{
			name: "loaded",
			res: device.PurseResult{CardNumber: "9470000000000002", Code: protocol.CodeOK, CVM: txn.CVMOfflinePIN,
				Transaction: txn.Transaction{Amount: eur(2000)}, Loaded: txn.Load{Seq: 1, Amount: eur(2000)},
				Before: purse(0, 0), After: purse(2000, 1)},
			load: true,
			want: "loaded 20.00 EUR into the purse: offline PIN\npurse 20.00 EUR (was 0.00 EUR), last load #1\ncard 9470000000000002 counter 3\n",
		},
		{
			name: "load signed before",
			res: device.PurseResult{CardNumber: "9470000000000002", Code: protocol.CodeOK,
				Loaded: txn.Load{Seq: 2, Amount: eur(700)}, Before: purse(100, 1), After: purse(800, 2)},
			load: true,
			want: "loaded 7.00 EUR into the purse: load #2 signed before, applied now\npurse 8.00 EUR (was 1.00 EUR), last load #2\ncard 9470000000000002 counter 3\n",
		},
		{
			name: "unloaded",
			res: device.PurseResult{CardNumber: "9470000000000002", Code: protocol.CodeOK, CVM: txn.CVMBiometric,
				Transaction: txn.Transaction{Amount: eur(500)}, Before: purse(2000, 1), After: purse(1500, 1)},
			want: "unloaded 5.00 EUR to the holder's account: biometric\npurse 15.00 EUR (was 20.00 EUR), last load #1\ncard 9470000000000002 counter 3\n",
		},
		{
			name:    "insufficient funds",
			res:     device.PurseResult{Code: protocol.CodeInsufficientFunds},
			load:    true,
			wantErr: "20.00 EUR not loaded: insufficient funds",
			hint:    "cardlink account deposit",
		},
		{
			name:    "online PIN wrong",
			res:     device.PurseResult{Code: protocol.CodePINIncorrect, TriesLeft: 2},
			load:    true,
			wantErr: "20.00 EUR not loaded: " + protocol.CodePINIncorrect.String() + " (2 tries left)",
		},
		{
			name:    "purse out of step",
			res:     device.PurseResult{Code: protocol.CodePurseState},
			wantErr: "20.00 EUR not unloaded: " + protocol.CodePurseState.String(),
			hint:    "out of step",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := purseResult(&out, tt.res, eur(2000), 3, tt.load)
			if tt.wantErr == "" {
				if err != nil || out.String() != tt.want {
					t.Fatalf("purseResult() = %q, %v; want %q, nil", out.String(), err, tt.want)
				}
				return
			}
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("purseResult() error = %v, want %q", err, tt.wantErr)
			}
			if got := hints(err); !strings.Contains(got, tt.hint) {
				t.Errorf("purseResult() hints = %q, want one containing %q", got, tt.hint)
			}
		})
	}
}

func TestPurseError(t *testing.T) {
	refused := &iso7816.StatusError{SW: 0x6985}
	tests := []struct {
		name string
		err  error
		res  device.PurseResult
		load bool
		want string // in the message
		hint string
	}{
		{"card refuses the load", fmt.Errorf("loading purse: %w", refused),
			device.PurseResult{Load: []byte{1}, Loaded: txn.Load{Seq: 4, Amount: eur(1000)}}, true,
			"the card refused the signed load #4 of 10.00 EUR", "run 'cardlink device load' again"},
		{"purse full", fmt.Errorf("loading purse: %w", &iso7816.StatusError{SW: 0x6A84}),
			device.PurseResult{Load: []byte{1}, Loaded: txn.Load{Seq: 4, Amount: eur(1000)}}, true,
			"the card refused the signed load #4 of 10.00 EUR", "over its maximum"},
		{"unload over the balance", fmt.Errorf("unloading purse: %w", refused),
			device.PurseResult{Before: wallet.PurseState{Balance: eur(300)}}, false,
			"unloading purse", "the purse holds 3.00 EUR"},
		{"purse state refused", fmt.Errorf("loading purse: %w", &protocol.Error{Code: protocol.CodePurseState}),
			device.PurseResult{}, true, "loading purse", "out of step"},
		{"other", errors.New("connecting to server: refused"), device.PurseResult{}, true, "connecting to server", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := purseError(tt.err, tt.res, tt.load)
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("purseError() = %q, want it to contain %q", err, tt.want)
			}
			if got := hints(err); !strings.Contains(got, tt.hint) {
				t.Errorf("purseError() hints = %q, want one containing %q", got, tt.hint)
			}
			if !errors.Is(err, errors.Unwrap(tt.err)) && !errors.Is(err, tt.err) {
				t.Errorf("purseError() = %v, does not wrap %v", err, tt.err)
			}
		})
	}
}

// hints returns the hint lines err carries, joined by newlines.
func hints(err error) string {
	var h *hintError
	if !errors.As(err, &h) {
		return ""
	}
	return strings.Join(h.hints, "\n")
}

func TestMerchantRedeem(t *testing.T) {
	receipt := redemptionBody{Card: "9470000000000002", Transaction: "4QA=", Counter: 5, CVM: 1, Signature: "MEUC"}
	ok := `{"id":"rd_1","card":"9470000000000002","counter":5,"transaction_id":"00ff","amount":350,"currency":"EUR","status":"redeemed","transfer":3,"created":"2026-11-28T21:00:00Z"}`
	tests := []struct {
		name     string
		file     string // the receipt file's content
		status   int
		answer   string
		code     int
		stdout   string
		stderr   string
		wantPost bool
	}{
		{"redeemed", "", 201, ok, 0,
			"redemption rd_1 redeemed: 3.50 EUR from card 9470000000000002, counter 5\ntransaction 00ff, transfer 3\n", "", true},
		{"already redeemed", "", 409,
			`{"type":"https://cardlink.dev/problems/already-redeemed","title":"Purse receipt already redeemed","status":409,"detail":"This receipt was redeemed before, as rd_1 (by you)."}`,
			1, "", "cardlink: redeeming receipt: This receipt was redeemed before, as rd_1 (by you)\nhint: a receipt is paid once, and this one was: nothing moved (see 'cardlink merchant balance')\n", true},
		{"refused", "", 422,
			`{"type":"https://cardlink.dev/problems/receipt-refused","title":"Purse receipt refused","status":422,"detail":"The receipt pays another merchant."}`,
			1, "", "cardlink: redeeming receipt: The receipt pays another merchant\nhint: a receipt is redeemed by the merchant it names, in its account's currency; a changed receipt fails the card's signature\n", true},
		{"no e-money", "", 501,
			`{"type":"https://cardlink.dev/problems/not-implemented","title":"Not implemented","status":501,"detail":"This server runs no e-money service."}`,
			1, "", "cardlink: redeeming receipt: This server runs no e-money service\nhint: this server runs no e-money service\n", true},
		{"not a receipt", `{"id":"rd_1"}`, 201, ok, 1, "", "not a purse receipt", false},
		{"not JSON", `card=1`, 201, ok, 1, "", "not a purse receipt", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got redemptionBody
			posted := false
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodPost || r.URL.Path != "/v1/purse-redemptions" || r.Header.Get("Authorization") != "Bearer mkey" {
					http.NotFound(w, r)
					return
				}
				posted = true
				dec := json.NewDecoder(r.Body)
				dec.DisallowUnknownFields()
				if err := dec.Decode(&got); err != nil {
					t.Errorf("request body: %v", err)
				}
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.answer)
			}))
			defer srv.Close()
			path := filepath.Join(t.TempDir(), "receipt.json")
			body := tt.file
			if body == "" {
				b, _ := json.Marshal(receipt)
				body = string(b)
			}
			if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			code := Main([]string{"merchant", "redeem", "--http", srv.URL, "--key", "mkey", "--receipt", path}, strings.NewReader(""), &stdout, &stderr)
			if code != tt.code || stdout.String() != tt.stdout || !strings.Contains(stderr.String(), tt.stderr) {
				t.Errorf("merchant redeem = %d, stdout %q, stderr %q; want %d, %q, %q", code, stdout.String(), stderr.String(), tt.code, tt.stdout, tt.stderr)
			}
			if posted != tt.wantPost {
				t.Errorf("merchant redeem posted = %v, want %v", posted, tt.wantPost)
			}
			if posted && got != receipt {
				t.Errorf("merchant redeem posted %+v, want the receipt %+v", got, receipt)
			}
		})
	}
}
