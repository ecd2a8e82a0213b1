package cli

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"cardlink/internal/money"
	"cardlink/internal/txn"
)

func accountCommand() *command {
	return &command{
		name:    "account",
		summary: "deposit into card holders' accounts and show ledger accounts",
		subs:    []*command{accountDepositCommand(), accountShowCommand(), accountStatementCommand()},
	}
}

// operatorKeyHelp is the paragraph on the operator key that the account
// commands' help ends with.
const operatorKeyHelp = `
The operator key is read from --operator-key-file, or from --operator-key,
or from CARDLINK_OPERATOR_KEY; --http is the server's API (default ` + defaultAPI + `).`

const accountDepositHelp = `
Deposits money into the holder account of the card NUMBER (POST
/v1/cards/{number}/deposits, with the operator key), creating the account
if it has none in that currency yet; purchases the card approves are paid
from it. --amount is a decimal amount in --currency. A deposit carries an
idempotency key: with --idempotency-key a retry deposits once; without
it a fresh key is drawn and printed, to retry with.

example:
  cardlink account deposit --card 9470000000000002 --amount 50.00 --operator-key-file cardlink-data/operator.key
` + operatorKeyHelp

// deposited is the API's answer to a deposit.
type deposited struct {
	Account  string `json:"account"`
	Balance  int64  `json:"balance"`
	Transfer int64  `json:"transfer"`
}

func accountDepositCommand() *command {
	c := &command{name: "deposit", summary: "deposit money into a card holder's account"}
	c.run = func(e *env, args []string) error {
		fs := newFlags(e, "cardlink account deposit",
			"cardlink account deposit --card NUMBER --amount 50.00 [--currency EUR] [--idempotency-key KEY]", accountDepositHelp)
		card := fs.String("card", "", "the card number, 16 digits (required)")
		amount := fs.String("amount", "", "how much, such as 50.00 (required)")
		cur := fs.String("currency", "EUR", "currency of the amount and the account")
		idem := fs.String("idempotency-key", "", "key that makes a retry deposit once (default: a new one, printed)")
		api := addAPIFlags(fs, operatorKeyKind)
		if err := parse(fs, args); err != nil {
			return err
		}
		if err := required(fs, "card", "amount"); err != nil {
			return err
		}
		if err := noArgs(fs); err != nil {
			return err
		}
		number := strings.ReplaceAll(*card, " ", "")
		if err := txn.ValidCardNumber(number); err != nil {
			return usagef("account deposit: --card: %v", err)
		}
		amt, err := parseAmountFlag("account deposit", "amount", *amount, *cur)
		if err != nil {
			return err
		}
		cl, err := api.client("account deposit")
		if err != nil {
			return err
		}
		key := *idem
		if key == "" {
			key = newIdempotencyKey()
		}
		var d deposited
		call := apiCall{method: http.MethodPost, path: "/v1/cards/" + url.PathEscape(number) + "/deposits",
			body:   map[string]any{"amount": amt.Minor, "currency": string(amt.Currency)},
			header: map[string]string{"Idempotency-Key": key}, what: "depositing to card " + number,
			notFound: "the server learns a card the first time it is used: authenticate with it once ('cardlink device auth')"}
		h, err := cl.doJSON(e.ctx, call, &d)
		if err != nil {
			var ae *apiError
			if *idem == "" && !(errors.As(err, &ae) && ae.status < 500) {
				return withHint(err, "retry with --idempotency-key "+key+" to deposit at most once")
			}
			return err
		}
		fmt.Fprintf(e.stdout, "deposited %s to %s: balance %s (transfer %d)\n",
			amt, d.Account, money.Amount{Minor: d.Balance, Currency: amt.Currency}, d.Transfer)
		if h.Get("Idempotent-Replayed") == "true" {
			fmt.Fprintln(e.stdout, "(the idempotency key was used before: nothing new was deposited)")
		}
		if *idem == "" {
			fmt.Fprintf(e.stdout, "idempotency key %s\n", key)
		}
		return nil
	}
	return c
}

const accountShowHelp = `
Shows the ledger account ID: its kind, balance and limit. ID is an account
id such as "holder:9470000000000002:EUR" or a merchant's "acct_mer_…"; a
card number alone stands for the card's holder account in --currency.

example:
  cardlink account show 9470000000000002
` + operatorKeyHelp

// accountID resolves a card number to its holder account, as the server
// names it (ledger.HolderAccount), and passes other ids through.
func accountID(cmd, id, cur string) (string, error) {
	number := strings.ReplaceAll(id, " ", "")
	if txn.ValidCardNumber(number) != nil {
		return id, nil
	}
	c, err := money.ParseCurrency(strings.ToUpper(cur))
	if err != nil {
		return "", usagef("%s: --currency: %v", cmd, err)
	}
	return "holder:" + number + ":" + string(c), nil
}

func accountShowCommand() *command {
	c := &command{name: "show", summary: "show a ledger account's balance"}
	c.run = func(e *env, args []string) error {
		fs := newFlags(e, "cardlink account show", "cardlink account show [--currency EUR] ID", accountShowHelp)
		cur := fs.String("currency", "EUR", "currency of the holder account, when ID is a card number")
		api := addAPIFlags(fs, operatorKeyKind)
		arg, err := parseOneArg(fs, args, "account ID")
		if err != nil {
			return err
		}
		id, err := accountID("account show", arg, *cur)
		if err != nil {
			return err
		}
		cl, err := api.client("account show")
		if err != nil {
			return err
		}
		var a accountView
		if _, err := cl.doJSON(e.ctx, apiCall{method: http.MethodGet, path: "/v1/accounts/" + url.PathEscape(id), what: "reading account " + id}, &a); err != nil {
			return err
		}
		a.print(e.stdout)
		return nil
	}
	return c
}

const accountStatementHelp = `
Prints the statement of the ledger account ID (an account id, or a card
number for its holder account in --currency): the opening balance, every
entry and the closing balance for the period [--from, --to) (dates such
as 2026-11-28 or RFC 3339 times; --to defaults to now, --from to 31 days
before --to; a period is at most 366 days). --csv prints the
server's CSV export instead.

example:
  cardlink account statement 9470000000000002 --csv
` + operatorKeyHelp

func accountStatementCommand() *command {
	c := &command{name: "statement", summary: "print a ledger account's statement (or CSV)"}
	c.run = func(e *env, args []string) error {
		fs := newFlags(e, "cardlink account statement",
			"cardlink account statement [--currency EUR] [--from TIME] [--to TIME] [--csv] ID", accountStatementHelp)
		cur := fs.String("currency", "EUR", "currency of the holder account, when ID is a card number")
		sf := addStatementFlags(fs)
		api := addAPIFlags(fs, operatorKeyKind)
		arg, err := parseOneArg(fs, args, "account ID")
		if err != nil {
			return err
		}
		id, err := accountID("account statement", arg, *cur)
		if err != nil {
			return err
		}
		cl, err := api.client("account statement")
		if err != nil {
			return err
		}
		return sf.run(e, cl, "account statement", "/v1/accounts/"+url.PathEscape(id)+"/statement", "reading statement of "+id)
	}
	return c
}
