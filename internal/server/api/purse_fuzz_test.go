package api

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"cardlink/internal/money"
	"cardlink/internal/txn"
)

// redemptionSeed is a well-formed redemption body.
func redemptionSeed(tb testing.TB) string {
	t := txn.Transaction{ID: [16]byte{1, 2, 3}, Merchant: "Corner Shop", Item: "Coffee", Amount: money.Amount{Minor: 250, Currency: "EUR"},
		Time: time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC), Nonce: bytes.Repeat([]byte{7}, 16)}
	b, err := t.Encode()
	if err != nil {
		tb.Fatal(err)
	}
	return `{"card":"4000001234567899","transaction":"` + base64.StdEncoding.EncodeToString(b) +
		`","counter":12,"cvm":1,"signature":"` + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x30}, 70)) + `"}`
}

// FuzzRedemptionRequest: decoding and checking a POST
// /v1/purse-redemptions body never panics, and what it accepts is
// exactly what the body says (the receipt re-encodes to its fields).
func FuzzRedemptionRequest(f *testing.F) {
	good := redemptionSeed(f)
	for _, s := range []string{good, `{}`, ``, `null`, `[]`, "\xff",
		strings.Replace(good, `"counter":12`, `"counter":0`, 1),
		strings.Replace(good, `"counter":12`, `"counter":4294967296`, 1),
		strings.Replace(good, `"cvm":1`, `"cvm":4`, 1),
		strings.Replace(good, `"card":"4000001234567899"`, `"card":"4000001234567898"`, 1),
		strings.Replace(good, `"transaction":"`, `"transaction":"AA`, 1),
		good + ` {}`, strings.Replace(good, `}`, `,"extra":1}`, 1)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var req redemptionRequest
		if err := decodeJSON(bytes.NewReader(body), &req); err != nil {
			return
		}
		rc, msg := parseRedemption(&req)
		if msg != "" {
			if rc.Card != "" || rc.Transaction != nil || rc.Signature != nil {
				t.Fatalf("parseRedemption(%q) = %+v with %q, want nothing with a refusal", body, rc, msg)
			}
			return
		}
		if rc.Card != req.Card || base64.StdEncoding.EncodeToString(rc.Transaction) != req.Transaction ||
			int64(rc.Counter) != req.Counter || int64(rc.CVM) != req.CVM || base64.StdEncoding.EncodeToString(rc.Signature) != req.Signature {
			t.Fatalf("parseRedemption(%q) = %+v, want the request's fields", body, rc)
		}
		if _, err := txn.Parse(rc.Transaction); err != nil {
			t.Fatalf("parseRedemption(%q) accepted a transaction that does not parse: %v", body, err)
		}
	})
}
