package cli

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"cardlink/internal/iso7816"
	"cardlink/internal/txn"
)

const cardPayHelp = `
Pays a merchant from the e-money purse of the card in FILE, offline, as a
merchant's point of sale does: no server is asked. The card verifies the
holder (--pin, or --bio FILE for a template it matches), debits its purse
by --amount and signs a debit receipt over the transaction (the merchant,
the item, the amount, the time now, a fresh id and nonce), which it logs.

The receipt is written to --out as the JSON body of the merchant API's
POST /v1/purse-redemptions; the merchant redeems it, once, with
'cardlink merchant redeem --receipt FILE'. --merchant must be the
merchant's name exactly as the server has it, or the server refuses the
receipt. --amount is a decimal amount in the purse's currency (--currency
defaults to it). The receipt is money: keep it until it is redeemed.

Prints the amount paid, the purse's balance after and the card's counter.

example:
  cardlink card pay --card alice.card --merchant "Corner Café" --amount 3.50 --pin 1234 --out receipt.json`

// redemptionBody is the body of POST /v1/purse-redemptions: a card's
// purse debit receipt (docs/api.md, "E-money").
type redemptionBody struct {
	Card        string `json:"card"`        // 16 digits
	Transaction string `json:"transaction"` // base64 (standard, padded) of the canonical transaction
	Counter     uint32 `json:"counter"`     // the card's counter in the signature
	CVM         uint8  `json:"cvm"`         // as the card signed it
	Signature   string `json:"signature"`   // base64 of the DER signature
}

func cardPayCommand() *command {
	c := &command{name: "pay", summary: "pay a merchant offline from the card's purse; write the receipt"}
	c.run = func(e *env, args []string) error {
		fs := newFlags(e, "cardlink card pay",
			"cardlink card pay --card FILE --merchant NAME --amount 3.50 [--currency EUR] [--item TEXT] (--pin PIN | --bio FILE) --out FILE",
			cardPayHelp)
		path := fs.String("card", "", "card file (required)")
		merchant := fs.String("merchant", "", "the merchant's name, exactly as the server has it (required)")
		amount := fs.String("amount", "", "how much, such as 3.50 (required)")
		cur := fs.String("currency", "", "currency of --amount (default: the purse's)")
		item := fs.String("item", "Purchase", "what is bought, as the card logs it")
		pin := fs.String("pin", "", "PIN for the card to verify")
		bio := fs.String("bio", "", "file holding a biometric template for the card to match")
		out := fs.String("out", "", "file to write the receipt to; must not exist (required)")
		if err := parse(fs, args); err != nil {
			return err
		}
		if err := required(fs, "card", "merchant", "amount", "out"); err != nil {
			return err
		}
		if err := noArgs(fs); err != nil {
			return err
		}
		switch {
		case *pin != "" && *bio != "":
			return usagef("card pay: give --pin or --bio, not both")
		case *pin == "" && *bio == "":
			return withHint(usagef("card pay: the card debits its purse only after verifying the holder: give --pin or --bio"),
				"run 'cardlink card pay -h' for help")
		}
		var template []byte
		if *bio != "" {
			t, err := readTemplate(*bio)
			if err != nil {
				return err
			}
			template = t
		}
		t := txn.Transaction{Merchant: *merchant, Item: *item, Time: time.Now().UTC().Truncate(time.Second), Nonce: make([]byte, 16)}
		rand.Read(t.ID[:])
		rand.Read(t.Nonce)
		if *cur != "" {
			a, err := parseAmountFlag("card pay", "amount", *amount, *cur)
			if err != nil {
				return err
			}
			t.Amount = a
		}
		f, conn, cl, err := openWallet(e.ctx, *path)
		if err != nil {
			return err
		}
		defer f.Close()
		defer conn.Close()
		p, err := cl.Purse(e.ctx)
		if err != nil {
			return err
		}
		if *cur == "" {
			if t.Amount, err = parseAmountFlag("card pay", "amount", *amount, string(p.Balance.Currency)); err != nil {
				return err
			}
		}
		if err := t.Validate(); err != nil {
			// The merchant and item are the user's: say which is wrong.
			return usagef("card pay: %v", err)
		}
		if t.Amount.Currency != p.Balance.Currency {
			return fmt.Errorf("card pay: the purse holds %s, not %s", p.Balance.Currency, t.Amount.Currency)
		}
		if t.Amount.Minor > p.Balance.Minor {
			return withHint(fmt.Errorf("card pay: the purse holds only %s, not %s", p.Balance, t.Amount),
				"load it with 'cardlink device load --card "+*path+" --amount ...'")
		}
		in, err := cl.Info(e.ctx)
		if err != nil {
			return err
		}
		// The file first: a receipt the card signed must not be lost to a
		// file we cannot make.
		rf, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("card pay: %s exists; refusing to replace a receipt", *out)
		}
		if err != nil {
			return fmt.Errorf("creating receipt file: %w", err)
		}
		written := false
		defer func() {
			rf.Close()
			if !written {
				os.Remove(*out)
			}
		}()
		if template != nil {
			err = cl.VerifyBiometric(e.ctx, template)
		} else {
			err = cl.VerifyPIN(e.ctx, *pin)
		}
		if err != nil {
			return payError(err)
		}
		d, err := cl.Debit(e.ctx, &t)
		if err != nil {
			cl.ResetVerification(e.ctx) // best effort: the verification covers no later signature
			return payError(err)
		}
		body, _ := json.MarshalIndent(redemptionBody{
			Card:        in.CardNumber,
			Transaction: base64.StdEncoding.EncodeToString(d.Transaction),
			Counter:     d.Counter,
			CVM:         uint8(d.CVM),
			Signature:   base64.StdEncoding.EncodeToString(d.Sig),
		}, "", "  ")
		body = append(body, '\n')
		_, err = rf.Write(body)
		if err == nil {
			err = rf.Sync()
		}
		if err == nil {
			err = rf.Close()
		}
		if err != nil {
			// The purse is debited: the receipt must not vanish.
			fmt.Fprintf(e.stdout, "%s", body)
			return withHint(fmt.Errorf("writing receipt: %w", err),
				"the purse was debited: the receipt is printed above; save it and redeem it with 'cardlink merchant redeem'")
		}
		written = true
		fmt.Fprintf(e.stdout, "paid %s to %s from the purse: %s\n", t.Amount, t.Merchant, d.CVM)
		fmt.Fprintf(e.stdout, "purse %s (was %s)\n", d.Balance, p.Balance)
		fmt.Fprintf(e.stdout, "card %s counter %d\n", in.CardNumber, d.Counter)
		fmt.Fprintf(e.stdout, "receipt written to %s: the merchant redeems it with 'cardlink merchant redeem --receipt %s'\n", *out, *out)
		return nil
	}
	return c
}

// payError adds hints to the card's refusals of card pay.
func payError(err error) error {
	var pe *iso7816.PINError
	switch {
	case errors.As(err, &pe):
		return withHint(err, "the card refused the PIN and did not pay: nothing was debited")
	case errors.Is(err, iso7816.ErrBlocked):
		return withHint(err, "unblock the PIN with the PUK")
	case errors.Is(err, iso7816.ErrConditions):
		return withHint(err, "the purse does not hold that much: nothing was debited")
	case errors.Is(err, iso7816.ErrWrongData):
		return withHint(err, "the card refused the transaction (another currency than the purse's?): nothing was debited")
	}
	return err
}
