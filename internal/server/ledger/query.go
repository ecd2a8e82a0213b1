package ledger

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"cardlink/internal/money"
	"cardlink/internal/store"
)

// Balance returns the account's balance, or an error wrapping
// store.ErrNotFound.
func (l *Ledger) Balance(ctx context.Context, account string) (money.Amount, error) {
	a, err := l.st.Account(ctx, account)
	if err != nil {
		return money.Amount{}, err
	}
	return money.Amount{Minor: a.Balance, Currency: a.Currency}, nil
}

// Statement is an account's entries over a period with the running
// balance.
type Statement struct {
	Account  store.Account // as it is now
	From, To time.Time     // the period [From, To)
	Opening  int64         // balance just before From, minor units
	Closing  int64         // balance after the last entry of the period
	Entries  []store.Entry // oldest first; Entry.Balance is the running balance
}

// Statement returns the account's entries posted in [from, to).
func (l *Ledger) Statement(ctx context.Context, account string, from, to time.Time) (Statement, error) {
	a, err := l.st.Account(ctx, account)
	if err != nil {
		return Statement{}, err
	}
	opening, es, err := l.st.Entries(ctx, account, from, to)
	if err != nil {
		return Statement{}, err
	}
	closing := opening
	if len(es) > 0 {
		closing = es[len(es)-1].Balance
	}
	return Statement{Account: a, From: from, To: to, Opening: opening, Closing: closing, Entries: es}, nil
}

// WriteCSV writes s as CSV (RFC 4180): a header line, an "opening" line,
// one line per entry, and a "closing" line. Times are RFC 3339 in UTC;
// amounts are decimal in the account's currency ("12.34"). A key or memo
// that starts like a spreadsheet formula (=, +, -, @, tab, CR) gets a
// leading "'".
func (s Statement) WriteCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	amt := func(m int64) string {
		a := money.Amount{Minor: m, Currency: s.Account.Currency}.String()
		n, _, _ := cutLast(a)
		return n
	}
	cw.Write([]string{"time", "transfer", "key", "memo", "amount", "balance", "currency"})
	cw.Write([]string{s.From.UTC().Format(time.RFC3339Nano), "", "", "opening", "", amt(s.Opening), string(s.Account.Currency)})
	for _, e := range s.Entries {
		cw.Write([]string{e.Time.UTC().Format(time.RFC3339Nano), strconv.FormatInt(e.Transfer, 10), text(e.Key),
			text(e.Memo), amt(e.Amount), amt(e.Balance), string(s.Account.Currency)})
	}
	cw.Write([]string{s.To.UTC().Format(time.RFC3339Nano), "", "", "closing", "", amt(s.Closing), string(s.Account.Currency)})
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("writing statement CSV: %w", err)
	}
	return nil
}

// text defuses a cell that a spreadsheet would run as a formula (OWASP
// "CSV injection"): keys and memos come from merchants.
func text(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

// cutLast splits "12.34 EUR" at its last space.
func cutLast(s string) (before, after string, found bool) {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == ' ' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// Account names the server uses. A holder has one account per card and
// currency; funding and float accounts are one per currency.

// HolderAccount returns the ID of card's holder account in cur.
func HolderAccount(card string, cur money.Currency) string {
	return "holder:" + card + ":" + string(cur)
}

// FundingAccount returns the ID of the funding account in cur: money that
// came into the ledger from outside (deposits) or left it.
func FundingAccount(cur money.Currency) string { return "funding:" + string(cur) }

// FloatAccount returns the ID of the issuer float in cur, which mirrors
// the e-money outstanding in purses.
func FloatAccount(cur money.Currency) string { return "float:" + string(cur) }
