package cli

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"cardlink/internal/money"
	"cardlink/internal/txn"
)

func merchantCommand() *command {
	return &command{
		name:    "merchant",
		summary: "sell through the server: merchants, items, purchase requests, refunds, e-money",
		subs: []*command{
			merchantCreateCommand(),
			{name: "item", summary: "add items to the catalogue and list them",
				subs: []*command{merchantItemAddCommand(), merchantItemListCommand()}},
			merchantPurchaseCommand(),
			merchantStatusCommand(),
			merchantRefundCommand(),
			merchantRefundsCommand(),
			merchantRedeemCommand(),
			merchantBalanceCommand(),
			merchantStatementCommand(),
		},
	}
}

// merchantKeyHelp is the paragraph on the merchant key that every
// merchant command's help ends with.
const merchantKeyHelp = `
The merchant's API key is read from --key-file, or from --key, or from
CARDLINK_MERCHANT_KEY; --http is the server's API (default ` + defaultAPI + `).`

const merchantCreateHelp = `
Creates a merchant on the server (POST /v1/merchants, with the operator
key) and prints its id, its ledger account and, once only, its API key and
webhook secret. --currency opens the merchant's account, which purchases
are paid into (--currency "" opens none). --key-out FILE writes the API
key to FILE (mode 0600) instead of printing it.

The operator key is read from --operator-key-file, or from --operator-key,
or from CARDLINK_OPERATOR_KEY.

example:
  cardlink merchant create --name "Corner Café" --operator-key-file cardlink-data/operator.key --key-out cafe.key`

// merchantCreated is the API's answer to POST /v1/merchants.
type merchantCreated struct {
	ID            string `json:"id"`
	Name          string `json:"name"`
	WebhookURL    string `json:"webhook_url"`
	Account       string `json:"account"`
	APIKey        string `json:"api_key"`
	WebhookSecret string `json:"webhook_secret"`
}

func merchantCreateCommand() *command {
	c := &command{name: "create", summary: "create a merchant and print its API key once"}
	c.run = func(e *env, args []string) error {
		fs := newFlags(e, "cardlink merchant create",
			"cardlink merchant create --name NAME [--currency EUR] [--webhook URL] [--key-out FILE]", merchantCreateHelp)
		name := fs.String("name", "", "the merchant's name, shown to card holders (required)")
		cur := fs.String("currency", "EUR", "currency of the merchant's ledger account; empty for none")
		webhook := fs.String("webhook", "", "URL the server posts purchase outcomes to")
		keyOut := fs.String("key-out", "", "file to write the API key to (mode 0600) instead of printing it")
		api := addAPIFlags(fs, operatorKeyKind)
		if err := parse(fs, args); err != nil {
			return err
		}
		if err := required(fs, "name"); err != nil {
			return err
		}
		if err := noArgs(fs); err != nil {
			return err
		}
		if *cur != "" {
			c, err := money.ParseCurrency(strings.ToUpper(*cur))
			if err != nil {
				return usagef("merchant create: --currency: %v", err)
			}
			*cur = string(c)
		}
		cl, err := api.client("merchant create")
		if err != nil {
			return err
		}
		// The key file first, so that a file we cannot make fails before
		// the server makes a merchant whose key would be lost.
		var out *os.File
		if *keyOut != "" {
			f, err := os.OpenFile(*keyOut, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if errors.Is(err, os.ErrExist) {
				return fmt.Errorf("merchant create: %s exists; refusing to replace a key", *keyOut)
			}
			if err != nil {
				return fmt.Errorf("creating key file: %w", err)
			}
			out = f
			defer func() {
				f.Close()
				if out != nil { // the key was not written
					os.Remove(*keyOut)
				}
			}()
		}
		var m merchantCreated
		body := map[string]string{"name": *name, "currency": *cur, "webhook_url": *webhook}
		if _, err := cl.doJSON(e.ctx, apiCall{method: http.MethodPost, path: "/v1/merchants", body: body, what: "creating merchant"}, &m); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "merchant %s created: %s\n", m.ID, m.Name)
		if m.Account != "" {
			fmt.Fprintf(e.stdout, "account %s (%s)\n", m.Account, *cur)
		}
		if out != nil {
			_, err := out.WriteString(m.APIKey + "\n")
			if err == nil {
				err = out.Sync()
			}
			if err != nil {
				return withHint(fmt.Errorf("writing API key: %w", err),
					"the merchant "+m.ID+" exists but its key is lost; create another")
			}
			out = nil // written: keep the file
			fmt.Fprintf(e.stdout, "api key written to %s\n", *keyOut)
		} else {
			fmt.Fprintf(e.stdout, "api key %s\n", m.APIKey)
		}
		fmt.Fprintf(e.stdout, "webhook secret %s\n", m.WebhookSecret)
		fmt.Fprintln(e.stdout, "the server keeps only hashes: this is the only time the key and secret are shown")
		return nil
	}
	return c
}

const merchantItemAddHelp = `
Adds an item to the merchant's catalogue (POST /v1/items) and prints its
id. --price is a decimal amount in --currency ("12.50"); --stock absent
means unlimited. --deliver says what the holder gets on payment: none, or
a voucher, ticket or licence (the text in --payload or --payload-file), or
a file (the bytes of --payload-file), signed by the issuer into the card's
e-goods store.

example:
  cardlink merchant item add --name "Gift voucher" --price 12.50 --deliver voucher --payload "CODE-1234"
` + merchantKeyHelp

// itemView is the API's view of a catalogue item.
type itemView struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Price    int64  `json:"price"`
	Currency string `json:"currency"`
	Stock    *int64 `json:"stock"`
	Delivery string `json:"delivery"`
	Created  string `json:"created"`
}

func (it itemView) price() string {
	return money.Amount{Minor: it.Price, Currency: money.Currency(it.Currency)}.String()
}

func (it itemView) stock() string {
	if it.Stock == nil {
		return "unlimited"
	}
	return strconv.FormatInt(*it.Stock, 10)
}

func merchantItemAddCommand() *command {
	c := &command{name: "add", summary: "add an item to the catalogue"}
	c.run = func(e *env, args []string) error {
		fs := newFlags(e, "cardlink merchant item add",
			"cardlink merchant item add --name NAME --price 12.50 [--currency EUR] [--stock N] [--deliver none|voucher|ticket|licence|file] [--payload TEXT | --payload-file FILE]",
			merchantItemAddHelp)
		name := fs.String("name", "", "the item's name, shown to card holders (required)")
		price := fs.String("price", "", "price, a decimal amount such as 12.50 (required)")
		cur := fs.String("currency", "EUR", "currency of the price")
		stock := fs.Int64("stock", -1, "how many there are (default unlimited)")
		deliver := fs.String("deliver", "none", "what is delivered: none, voucher, ticket, licence or file")
		payload := fs.String("payload", "", "the text delivered (voucher code, ticket, licence key)")
		payloadFile := fs.String("payload-file", "", "file holding what is delivered")
		api := addAPIFlags(fs, merchantKeyKind)
		if err := parse(fs, args); err != nil {
			return err
		}
		if err := required(fs, "name", "price"); err != nil {
			return err
		}
		if err := noArgs(fs); err != nil {
			return err
		}
		amt, err := parseAmountFlag("merchant item add", "price", *price, *cur)
		if err != nil {
			return err
		}
		if *payload != "" && *payloadFile != "" {
			return usagef("merchant item add: give --payload or --payload-file, not both")
		}
		content := []byte(*payload)
		if *payloadFile != "" {
			if content, err = os.ReadFile(*payloadFile); err != nil {
				return fmt.Errorf("reading payload: %w", err)
			}
		}
		body := map[string]any{"name": *name, "price": amt.Minor, "currency": string(amt.Currency), "delivery": *deliver}
		switch *deliver {
		case "none":
			if len(content) > 0 {
				return usagef("merchant item add: a payload needs --deliver voucher, ticket, licence or file")
			}
		case "voucher", "ticket", "licence":
			if len(content) == 0 {
				return usagef("merchant item add: --deliver %s needs --payload or --payload-file", *deliver)
			}
			body["payload"] = string(content)
		case "file":
			if *payloadFile == "" {
				return usagef("merchant item add: --deliver file needs --payload-file")
			}
			body["payload"] = base64.StdEncoding.EncodeToString(content)
		default:
			return usagef("merchant item add: --deliver %q: want none, voucher, ticket, licence or file", *deliver)
		}
		if *stock >= 0 {
			body["stock"] = *stock
		} else if *stock != -1 {
			return usagef("merchant item add: --stock %d: want 0 or more", *stock)
		}
		cl, err := api.client("merchant item add")
		if err != nil {
			return err
		}
		var it itemView
		if _, err := cl.doJSON(e.ctx, apiCall{method: http.MethodPost, path: "/v1/items", body: body, what: "adding item"}, &it); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "item %s added: %s, %s, stock %s, delivers %s\n", it.ID, it.Name, it.price(), it.stock(), it.Delivery)
		return nil
	}
	return c
}

const merchantItemListHelp = `
Lists the merchant's catalogue, oldest first: id, price, stock, what is
delivered and name.` + merchantKeyHelp

func merchantItemListCommand() *command {
	c := &command{name: "list", summary: "list the catalogue"}
	c.run = func(e *env, args []string) error {
		fs := newFlags(e, "cardlink merchant item list", "cardlink merchant item list", merchantItemListHelp)
		api := addAPIFlags(fs, merchantKeyKind)
		if err := parse(fs, args); err != nil {
			return err
		}
		if err := noArgs(fs); err != nil {
			return err
		}
		cl, err := api.client("merchant item list")
		if err != nil {
			return err
		}
		var list struct {
			Items []itemView `json:"items"`
		}
		if _, err := cl.doJSON(e.ctx, apiCall{method: http.MethodGet, path: "/v1/items", what: "listing items"}, &list); err != nil {
			return err
		}
		if len(list.Items) == 0 {
			fmt.Fprintln(e.stdout, "no items")
			return nil
		}
		w := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(w, "ID\tPRICE\tSTOCK\tDELIVERS\tNAME")
		for _, it := range list.Items {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", it.ID, it.price(), it.stock(), it.Delivery, it.Name)
		}
		return w.Flush()
	}
	return c
}

// purchaseView is the API's view of a purchase request.
type purchaseView struct {
	ID          string `json:"id"`
	Reference   string `json:"reference"`
	Status      string `json:"status"`
	ItemID      string `json:"item_id"`
	Description string `json:"description"`
	Amount      int64  `json:"amount"`
	Currency    string `json:"currency"`
	CallbackURL string `json:"callback_url"`
	Created     string `json:"created"`
	Expires     string `json:"expires"`
	CardLast4   string `json:"card_last4"`
	Transfer    int64  `json:"transfer"`
	Refunded    int64  `json:"refunded"`
	Reason      string `json:"reason"`
	Updated     string `json:"updated"`
	Approval    *struct {
		CVM       json.RawMessage `json:"cvm"` // a name or a number, as the API has it
		Counter   uint32          `json:"counter"`
		Device    string          `json:"device"`
		MatchedBy string          `json:"matched_by"`
	} `json:"approval"`
}

func (p *purchaseView) amount(minor int64) string {
	return money.Amount{Minor: minor, Currency: money.Currency(p.Currency)}.String()
}

// finished reports whether the purchase has left pending and authorized.
func (p *purchaseView) finished() bool {
	return p.Status != "pending" && p.Status != "authorized"
}

// print writes the purchase for a person.
func (p *purchaseView) print(w io.Writer) {
	fmt.Fprintf(w, "purchase %s %s: %s, %s\n", p.ID, p.Status, p.amount(p.Amount), p.Description)
	fmt.Fprintf(w, "reference %s\n", groupReference(p.Reference))
	if p.CardLast4 != "" {
		fmt.Fprintf(w, "card ending %s\n", p.CardLast4)
	}
	if a := p.Approval; a != nil {
		cvm := strings.Trim(string(a.CVM), `"`)
		if n, err := strconv.Atoi(cvm); err == nil {
			cvm = txn.CVM(n).String()
		}
		line := fmt.Sprintf("approved by the card with %s, counter %d", cvm, a.Counter)
		if a.Device != "" {
			line += ", device " + a.Device
		}
		if a.MatchedBy != "" {
			line += ", matched by the " + a.MatchedBy
		}
		fmt.Fprintln(w, line)
	}
	if p.Transfer != 0 {
		fmt.Fprintf(w, "transfer %d\n", p.Transfer)
	}
	if p.Refunded != 0 {
		fmt.Fprintf(w, "refunded %s of %s\n", p.amount(p.Refunded), p.amount(p.Amount))
	}
	if p.Reason != "" {
		fmt.Fprintf(w, "reason %s\n", p.Reason)
	}
	if !p.finished() && p.Expires != "" {
		fmt.Fprintf(w, "expires %s\n", p.Expires)
	}
}

const merchantPurchaseHelp = `
Creates a purchase request (POST /v1/purchases) for an item of the
catalogue (--item) or for a free amount (--amount, --currency and
--description), and prints its id and the reference code the card holder
types on the device ('cardlink device buy --code CODE'). --card pushes the
request to that card's device instead: only that card may pay it. A
request is pending for 15 minutes. --idempotency-key makes a retry safe:
the same key answers the first request again.

examples:
  cardlink merchant purchase --item item_0123…
  cardlink merchant purchase --amount 12.50 --currency EUR --description "Table 4"
` + merchantKeyHelp

func merchantPurchaseCommand() *command {
	c := &command{name: "purchase", summary: "create a purchase request and print its reference code"}
	c.run = func(e *env, args []string) error {
		fs := newFlags(e, "cardlink merchant purchase",
			"cardlink merchant purchase (--item ID | --amount 12.50 --currency EUR --description TEXT) [--card NUMBER] [--callback URL] [--idempotency-key KEY]",
			merchantPurchaseHelp)
		item := fs.String("item", "", "the catalogue item to sell")
		amount := fs.String("amount", "", "a free amount, such as 12.50")
		cur := fs.String("currency", "EUR", "currency of --amount")
		desc := fs.String("description", "", "what the holder sees (required with --amount; default the item's name)")
		card := fs.String("card", "", "push the request to this card (16-digit number)")
		callback := fs.String("callback", "", "URL the server posts this purchase's outcome to")
		idem := fs.String("idempotency-key", "", "key that makes a retry of this request safe")
		api := addAPIFlags(fs, merchantKeyKind)
		if err := parse(fs, args); err != nil {
			return err
		}
		if err := noArgs(fs); err != nil {
			return err
		}
		body := map[string]any{}
		switch {
		case *item != "" && *amount != "":
			return usagef("merchant purchase: give --item or --amount, not both")
		case *item != "":
			body["item_id"] = *item
		case *amount != "":
			amt, err := parseAmountFlag("merchant purchase", "amount", *amount, *cur)
			if err != nil {
				return err
			}
			if *desc == "" {
				return usagef("merchant purchase: --amount needs --description")
			}
			body["amount"], body["currency"] = amt.Minor, string(amt.Currency)
		default:
			return withHint(usagef("merchant purchase: give --item ID or --amount"), "run 'cardlink merchant purchase -h' for help")
		}
		if *desc != "" {
			body["description"] = *desc
		}
		if *card != "" {
			*card = strings.ReplaceAll(*card, " ", "")
			if err := txn.ValidCardNumber(*card); err != nil {
				return usagef("merchant purchase: --card: %v", err)
			}
			body["card"] = *card
		}
		if *callback != "" {
			body["callback_url"] = *callback
		}
		cl, err := api.client("merchant purchase")
		if err != nil {
			return err
		}
		call := apiCall{method: http.MethodPost, path: "/v1/purchases", body: body, what: "creating purchase"}
		if *idem != "" {
			call.header = map[string]string{"Idempotency-Key": *idem}
		}
		var p purchaseView
		h, err := cl.doJSON(e.ctx, call, &p)
		if err != nil {
			return err
		}
		p.print(e.stdout)
		if h.Get("Idempotent-Replayed") == "true" {
			fmt.Fprintln(e.stdout, "(the idempotency key was used before: this is the earlier request)")
		}
		return nil
	}
	return c
}

const merchantStatusHelp = `
Shows the purchase request ID: its status (pending, authorized, approved,
declined, expired, refunded-partially, refunded), amount, reference code,
the card's approval and what was refunded. --wait DURATION polls until the
request has left pending and authorized, for at most DURATION; the exit
status is 1 if it has not by then.

example:
  cardlink merchant status pur_0123… --wait 2m
` + merchantKeyHelp

func merchantStatusCommand() *command {
	c := &command{name: "status", summary: "show a purchase request, optionally waiting for its outcome"}
	c.run = func(e *env, args []string) error {
		fs := newFlags(e, "cardlink merchant status", "cardlink merchant status [--wait DURATION] ID", merchantStatusHelp)
		wait := fs.Duration("wait", 0, "poll until the purchase is finished, for at most this long")
		api := addAPIFlags(fs, merchantKeyKind)
		id, err := parseOneArg(fs, args, "purchase ID")
		if err != nil {
			return err
		}
		if *wait < 0 {
			return usagef("merchant status: --wait %v: want a positive duration", *wait)
		}
		cl, err := api.client("merchant status")
		if err != nil {
			return err
		}
		deadline := time.Now().Add(*wait)
		delay := 100 * time.Millisecond
		for {
			var p purchaseView
			call := apiCall{method: http.MethodGet, path: "/v1/purchases/" + url.PathEscape(id), what: "reading purchase " + id}
			if _, err := cl.doJSON(e.ctx, call, &p); err != nil {
				return err
			}
			left := time.Until(deadline)
			if *wait == 0 || p.finished() || left <= 0 {
				p.print(e.stdout)
				if *wait != 0 && !p.finished() {
					return fmt.Errorf("purchase %s still %s after %v", id, p.Status, *wait)
				}
				return nil
			}
			t := time.NewTimer(min(delay, left))
			select {
			case <-e.ctx.Done():
				t.Stop()
				return e.ctx.Err()
			case <-t.C:
			}
			delay = min(2*delay, time.Second)
		}
	}
	return c
}

// refundView is the API's view of a refund.
type refundView struct {
	ID         string `json:"id"`
	PurchaseID string `json:"purchase_id"`
	Amount     int64  `json:"amount"`
	Currency   string `json:"currency"`
	Status     string `json:"status"`
	Reason     string `json:"reason"`
	Created    string `json:"created"`
}

func (r refundView) amount() string {
	return money.Amount{Minor: r.Amount, Currency: money.Currency(r.Currency)}.String()
}

const merchantRefundHelp = `
Refunds the paid purchase ID (POST /v1/purchases/{id}/refunds): --amount
(a decimal amount in the purchase's currency), or without it all that is
not refunded yet. The money goes from the merchant's account back to the
holder's. A refund above what is left is refused; so is one the
merchant's balance does not cover (recorded as failed). --idempotency-key
makes a retry safe.

examples:
  cardlink merchant refund pur_0123… --amount 5.00
  cardlink merchant refund pur_0123…
` + merchantKeyHelp

func merchantRefundCommand() *command {
	c := &command{name: "refund", summary: "refund a paid purchase, in full or in part"}
	c.run = func(e *env, args []string) error {
		fs := newFlags(e, "cardlink merchant refund", "cardlink merchant refund [--amount 5.00] [--idempotency-key KEY] ID", merchantRefundHelp)
		amount := fs.String("amount", "", "how much to refund, such as 5.00 (default: all that is left)")
		idem := fs.String("idempotency-key", "", "key that makes a retry of this refund safe")
		api := addAPIFlags(fs, merchantKeyKind)
		id, err := parseOneArg(fs, args, "purchase ID")
		if err != nil {
			return err
		}
		cl, err := api.client("merchant refund")
		if err != nil {
			return err
		}
		body := map[string]any{}
		if *amount != "" {
			// The amount is in the purchase's currency: read it first.
			var p purchaseView
			call := apiCall{method: http.MethodGet, path: "/v1/purchases/" + url.PathEscape(id), what: "reading purchase " + id}
			if _, err := cl.doJSON(e.ctx, call, &p); err != nil {
				return err
			}
			amt, err := parseAmountFlag("merchant refund", "amount", *amount, p.Currency)
			if err != nil {
				return err
			}
			body["amount"] = amt.Minor
		}
		call := apiCall{method: http.MethodPost, path: "/v1/purchases/" + url.PathEscape(id) + "/refunds", body: body, what: "refunding " + id}
		if *idem != "" {
			call.header = map[string]string{"Idempotency-Key": *idem}
		}
		var r refundView
		if _, err := cl.doJSON(e.ctx, call, &r); err != nil {
			var ae *apiError
			if errors.As(err, &ae) && ae.problem.slug() == "refund-too-large" {
				// Say what is left, if the purchase can be read.
				var p purchaseView
				get := apiCall{method: http.MethodGet, path: "/v1/purchases/" + url.PathEscape(id), what: "reading purchase " + id}
				if _, gerr := cl.doJSON(e.ctx, get, &p); gerr == nil {
					return withHint(ae, fmt.Sprintf("%s of %s is left to refund (refunds under way count too)",
						p.amount(p.Amount-p.Refunded), p.amount(p.Amount)))
				}
			}
			return err
		}
		fmt.Fprintf(e.stdout, "refund %s %s: %s of %s\n", r.ID, r.Status, r.amount(), r.PurchaseID)
		if r.Status == "failed" {
			return fmt.Errorf("refund %s failed: %s", r.ID, r.Reason)
		}
		return nil
	}
	return c
}

const merchantRefundsHelp = `
Lists the refunds of the purchase ID, oldest first: id, status, amount and,
for a failed one, why.` + merchantKeyHelp

func merchantRefundsCommand() *command {
	c := &command{name: "refunds", summary: "list a purchase's refunds"}
	c.run = func(e *env, args []string) error {
		fs := newFlags(e, "cardlink merchant refunds", "cardlink merchant refunds ID", merchantRefundsHelp)
		api := addAPIFlags(fs, merchantKeyKind)
		id, err := parseOneArg(fs, args, "purchase ID")
		if err != nil {
			return err
		}
		cl, err := api.client("merchant refunds")
		if err != nil {
			return err
		}
		b, _, err := cl.do(e.ctx, apiCall{method: http.MethodGet, path: "/v1/purchases/" + url.PathEscape(id) + "/refunds", what: "listing refunds of " + id})
		if err != nil {
			return err
		}
		refunds, err := decodeRefunds(b)
		if err != nil {
			return fmt.Errorf("listing refunds of %s: decoding the answer: %w", id, err)
		}
		if len(refunds) == 0 {
			fmt.Fprintf(e.stdout, "no refunds of %s\n", id)
			return nil
		}
		w := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(w, "ID\tSTATUS\tAMOUNT\tCREATED\tREASON")
		for _, r := range refunds {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", r.ID, r.Status, r.amount(), r.Created, r.Reason)
		}
		return w.Flush()
	}
	return c
}

// decodeRefunds reads a list of refunds: {"refunds": [...]} or a bare
// array.
func decodeRefunds(b []byte) ([]refundView, error) {
	var list struct {
		Refunds []refundView `json:"refunds"`
	}
	if err := json.Unmarshal(b, &list); err == nil {
		return list.Refunds, nil
	}
	var bare []refundView
	if err := json.Unmarshal(b, &bare); err != nil {
		return nil, err
	}
	return bare, nil
}

const merchantRedeemHelp = `
Redeems a card's purse debit receipt (POST /v1/purse-redemptions): FILE
is the JSON that 'cardlink card pay --out FILE' wrote at the point of
sale ("-" reads it from standard input). The server checks the card and
its signature, that the receipt pays this merchant in its account's
currency, and moves the amount from the e-money float into the merchant's
account. A receipt is paid once: presenting it again is refused, naming
the first redemption.

example:
  cardlink merchant redeem --receipt receipt.json
` + merchantKeyHelp

// redemptionView is the API's view of a purse redemption.
type redemptionView struct {
	ID          string `json:"id"`
	Card        string `json:"card"`
	Counter     uint32 `json:"counter"`
	Transaction string `json:"transaction_id"`
	Amount      int64  `json:"amount"`
	Currency    string `json:"currency"`
	Status      string `json:"status"`
	Transfer    int64  `json:"transfer"`
	Created     string `json:"created"`
}

func merchantRedeemCommand() *command {
	c := &command{name: "redeem", summary: "redeem a card's e-money receipt into the merchant's account"}
	c.run = func(e *env, args []string) error {
		fs := newFlags(e, "cardlink merchant redeem", "cardlink merchant redeem --receipt FILE", merchantRedeemHelp)
		path := fs.String("receipt", "", "the receipt 'cardlink card pay' wrote; - for standard input (required)")
		api := addAPIFlags(fs, merchantKeyKind)
		if err := parse(fs, args); err != nil {
			return err
		}
		if err := required(fs, "receipt"); err != nil {
			return err
		}
		if err := noArgs(fs); err != nil {
			return err
		}
		var b []byte
		var err error
		if *path == "-" {
			b, err = io.ReadAll(io.LimitReader(e.stdin, 64<<10))
		} else {
			b, err = os.ReadFile(*path)
		}
		if err != nil {
			return fmt.Errorf("reading receipt: %w", err)
		}
		// Send what the card signed as it is, but only a receipt: the
		// server refuses unknown fields, and a wrong file should say so.
		var rc redemptionBody
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&rc); err != nil || rc.Card == "" || rc.Transaction == "" || rc.Signature == "" {
			return withHint(fmt.Errorf("merchant redeem: %s is not a purse receipt", *path),
				"give the file 'cardlink card pay --out FILE' wrote")
		}
		cl, err := api.client("merchant redeem")
		if err != nil {
			return err
		}
		var r redemptionView
		call := apiCall{method: http.MethodPost, path: "/v1/purse-redemptions", body: rc, what: "redeeming receipt"}
		if _, err := cl.doJSON(e.ctx, call, &r); err != nil {
			return redeemError(err)
		}
		amt := money.Amount{Minor: r.Amount, Currency: money.Currency(r.Currency)}
		fmt.Fprintf(e.stdout, "redemption %s %s: %s from card %s, counter %d\n", r.ID, r.Status, amt, r.Card, r.Counter)
		fmt.Fprintf(e.stdout, "transaction %s, transfer %d\n", r.Transaction, r.Transfer)
		return nil
	}
	return c
}

// redeemError replaces the generic hint of the redemption problems with
// what to do about them.
func redeemError(err error) error {
	var ae *apiError
	if !errors.As(err, &ae) {
		return err
	}
	switch ae.problem.slug() {
	case "already-redeemed":
		return withHint(ae, "a receipt is paid once, and this one was: nothing moved (see 'cardlink merchant balance')")
	case "receipt-refused":
		return withHint(ae, "a receipt is redeemed by the merchant it names, in its account's currency; a changed receipt fails the card's signature")
	case "card-unknown":
		return withHint(ae, "the server issued no such card: the receipt is not from one of its cards")
	case "card-revoked":
		return withHint(ae, "the card was revoked: its receipts are not redeemed")
	case "not-implemented":
		return withHint(ae, "this server runs no e-money service")
	case "invalid-request":
		return withHint(ae, "the receipt is damaged: give the file 'cardlink card pay' wrote, unchanged")
	}
	return err
}

// accountView is the API's view of a ledger account.
type accountView struct {
	ID       string `json:"id"`
	Kind     string `json:"kind"`
	Currency string `json:"currency"`
	Balance  int64  `json:"balance"`
	Limit    int64  `json:"limit"`
}

func (a accountView) print(w io.Writer) {
	m := func(minor int64) string {
		return money.Amount{Minor: minor, Currency: money.Currency(a.Currency)}.String()
	}
	fmt.Fprintf(w, "account %s (%s)\n", a.ID, a.Kind)
	fmt.Fprintf(w, "balance %s\n", m(a.Balance))
	if a.Limit > -1e15 { // a funding account's limit is "none" in practice
		fmt.Fprintf(w, "limit %s\n", m(a.Limit))
	} else {
		fmt.Fprintln(w, "limit none")
	}
}

const merchantBalanceHelp = `
Shows the merchant's ledger account: its balance (what purchases paid in,
less refunds) and its limit.` + merchantKeyHelp

func merchantBalanceCommand() *command {
	c := &command{name: "balance", summary: "show the merchant's account balance"}
	c.run = func(e *env, args []string) error {
		fs := newFlags(e, "cardlink merchant balance", "cardlink merchant balance", merchantBalanceHelp)
		api := addAPIFlags(fs, merchantKeyKind)
		if err := parse(fs, args); err != nil {
			return err
		}
		if err := noArgs(fs); err != nil {
			return err
		}
		cl, err := api.client("merchant balance")
		if err != nil {
			return err
		}
		var a accountView
		if _, err := cl.doJSON(e.ctx, apiCall{method: http.MethodGet, path: "/v1/balance", what: "reading balance"}, &a); err != nil {
			return err
		}
		a.print(e.stdout)
		return nil
	}
	return c
}

const merchantStatementHelp = `
Prints the merchant account's statement: the opening balance, every entry
(time, transfer, amount, running balance, memo) and the closing balance,
for the period [--from, --to) (dates such as 2026-11-28 or RFC 3339
times; --to defaults to now, --from to 31 days before --to; a period is
at most 366 days). --csv prints the server's CSV export instead.

example:
  cardlink merchant statement --from 2026-11-01 --csv > november.csv
` + merchantKeyHelp

func merchantStatementCommand() *command {
	c := &command{name: "statement", summary: "print the merchant account's statement (or CSV)"}
	c.run = func(e *env, args []string) error {
		fs := newFlags(e, "cardlink merchant statement", "cardlink merchant statement [--from TIME] [--to TIME] [--csv]", merchantStatementHelp)
		sf := addStatementFlags(fs)
		api := addAPIFlags(fs, merchantKeyKind)
		if err := parse(fs, args); err != nil {
			return err
		}
		if err := noArgs(fs); err != nil {
			return err
		}
		cl, err := api.client("merchant statement")
		if err != nil {
			return err
		}
		return sf.run(e, cl, "merchant statement", "/v1/statement", "reading statement")
	}
	return c
}

// statementFlags are the flags of the statement commands.
type statementFlags struct {
	from, to *string
	csv      *bool
}

func addStatementFlags(fs *flag.FlagSet) *statementFlags {
	return &statementFlags{
		from: fs.String("from", "", "start of the period (date or RFC 3339 time); default 31 days before --to"),
		to:   fs.String("to", "", "end of the period, excluded; default now"),
		csv:  fs.Bool("csv", false, "print CSV (RFC 4180) instead of a table"),
	}
}

// statementView is the API's JSON statement.
type statementView struct {
	Account  string `json:"account"`
	Currency string `json:"currency"`
	Opening  int64  `json:"opening"`
	Closing  int64  `json:"closing"`
	Entries  []struct {
		Transfer int64  `json:"transfer"`
		Key      string `json:"key"`
		Amount   int64  `json:"amount"`
		Balance  int64  `json:"balance"`
		Memo     string `json:"memo"`
		Time     string `json:"time"`
	} `json:"entries"`
}

// run fetches the statement at path and prints it.
func (sf *statementFlags) run(e *env, cl *apiClient, cmd, path, what string) error {
	q := url.Values{}
	for _, f := range []struct{ name, v string }{{"from", *sf.from}, {"to", *sf.to}} {
		t, err := parseTimeFlag(cmd, f.name, f.v)
		if err != nil {
			return err
		}
		if !t.IsZero() {
			q.Set(f.name, t.UTC().Format(time.RFC3339))
		}
	}
	if *sf.csv {
		q.Set("format", "csv")
		b, _, err := cl.do(e.ctx, apiCall{method: http.MethodGet, path: path, query: q, what: what})
		if err != nil {
			return err
		}
		_, err = e.stdout.Write(b)
		return err
	}
	var s statementView
	if _, err := cl.doJSON(e.ctx, apiCall{method: http.MethodGet, path: path, query: q, what: what}, &s); err != nil {
		return err
	}
	s.print(e.stdout)
	return nil
}

// print writes the statement as a table: amounts right-aligned, times in
// UTC to the second.
func (s *statementView) print(w io.Writer) {
	m := func(minor int64) string {
		return money.Amount{Minor: minor, Currency: money.Currency(s.Currency)}.String()
	}
	type row struct{ time, transfer, amount, balance, memo string }
	rows := []row{{"TIME", "TRANSFER", "AMOUNT", "BALANCE", "MEMO"}, {balance: m(s.Opening), memo: "opening"}}
	for _, en := range s.Entries {
		t := en.Time
		if pt, err := time.Parse(time.RFC3339Nano, en.Time); err == nil {
			t = pt.UTC().Format(time.DateTime)
		}
		rows = append(rows, row{t, strconv.FormatInt(en.Transfer, 10), m(en.Amount), m(en.Balance), en.Memo})
	}
	rows = append(rows, row{balance: m(s.Closing), memo: "closing"})
	var wt, wn, wa, wb int
	for _, r := range rows {
		wt, wn, wa, wb = max(wt, len(r.time)), max(wn, len(r.transfer)), max(wa, len(r.amount)), max(wb, len(r.balance))
	}
	fmt.Fprintf(w, "statement of %s\n", s.Account)
	for _, r := range rows {
		fmt.Fprintf(w, "%-*s  %*s  %*s  %*s  %s\n", wt, r.time, wn, r.transfer, wa, r.amount, wb, r.balance, r.memo)
	}
}
