package cli

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"time"

	"cardlink/internal/device"
	"cardlink/internal/iso7816"
	"cardlink/internal/money"
	"cardlink/internal/protocol"
	"cardlink/internal/wallet"
)

const deviceLoadHelp = `
Loads the e-money purse of the card in FILE from the holder's account,
through the device in DEVDIR: the server offers a "Purse load" from the
issuer, the holder approves it as a purchase and is verified (--pin,
--online-pin or --bio; not --server-bio), the card signs it, the server
takes the money from the holder's account and hands out a load signed by
the issuer, which the card applies to its purse. --amount is a decimal
amount in the purse's currency (--currency defaults to it).

When an earlier load was signed but never reached the card (a lost
connection), the server hands that one out again and the card applies it
with no new approval: the amount loaded is then that load's.

Prints the purse's balance before and after and the card's counter.
Exit status 0 means loaded; 1, with a one-line reason, anything else
(declined, wrong PIN, insufficient funds, a load over the purse's maximum,
the purse out of step with the server...): then nothing was loaded.

example:
  cardlink device load --card alice.card --device dev --amount 20.00 --pin 1234`

const deviceUnloadHelp = `
Moves --amount from the e-money purse of the card in FILE back to the
holder's account, through the device in DEVDIR: the server offers a "Purse
unload" to the issuer, the holder approves it and is verified by the card
(--pin or --bio: the card debits its purse only after verifying the holder
itself), the card debits its purse and signs, and the server credits the
holder's account. --amount is a decimal amount in the purse's currency
(--currency defaults to it); it cannot exceed the purse's balance.

Prints the purse's balance before and after and the card's counter.
Exit status 0 means unloaded; 1, with a one-line reason, anything else
(declined, wrong PIN, more than the purse holds...): then nothing moved.

example:
  cardlink device unload --card alice.card --device dev --amount 5.00 --pin 1234`

func deviceLoadCommand() *command {
	c := &command{name: "load", summary: "load a card's e-money purse from the holder's account"}
	c.run = func(e *env, args []string) error {
		return runDevicePurse(e, args, true)
	}
	return c
}

func deviceUnloadCommand() *command {
	c := &command{name: "unload", summary: "move e-money from a card's purse back to the holder's account"}
	c.run = func(e *env, args []string) error {
		return runDevicePurse(e, args, false)
	}
	return c
}

// runDevicePurse runs device load (load) or device unload.
func runDevicePurse(e *env, args []string, load bool) error {
	name, help, synopsis := "device unload", deviceUnloadHelp, "--amount 5.00 [--currency EUR] (--pin PIN | --bio FILE)"
	if load {
		name, help, synopsis = "device load", deviceLoadHelp, "--amount 20.00 [--currency EUR] (--pin PIN | --online-pin PIN | --bio FILE)"
	}
	fs := newFlags(e, "cardlink "+name,
		"cardlink "+name+" --card FILE --device DEVDIR "+synopsis+" [--decline] [--yes=false]",
		help)
	hf := addHolderFlags(fs)
	amount := fs.String("amount", "", "how much, such as 20.00 (required)")
	cur := fs.String("currency", "", "currency of --amount (default: the purse's)")
	decline := fs.Bool("decline", false, "decline the transaction on the device")
	yes := fs.Bool("yes", true, "approve without asking; --yes=false asks on the terminal")
	timeout := fs.Duration("timeout", time.Minute, "how long the whole exchange may take")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "card", "device", "amount"); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	var amt money.Amount
	if *cur != "" {
		a, err := parseAmountFlag(name, "amount", *amount, *cur)
		if err != nil {
			return err
		}
		amt = a
	}
	auth, err := hf.options(name)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(e.ctx, *timeout)
	defer cancel()
	ds, err := hf.open(ctx, e)
	if err != nil {
		return err
	}
	defer ds.close()
	// Check the amount against the purse before the server hears of it:
	// a load the card cannot take would be paid for and left unapplied,
	// an unload over the balance offered for nothing.
	p, err := ds.card.Purse(ctx)
	if err != nil {
		return err
	}
	if *cur == "" {
		if amt, err = parseAmountFlag(name, "amount", *amount, string(p.Balance.Currency)); err != nil {
			return err
		}
	}
	if amt.Currency != p.Balance.Currency {
		return fmt.Errorf("%s: the purse holds %s, not %s", name, p.Balance.Currency, amt.Currency)
	}
	switch {
	case load && amt.Minor > p.Max.Minor-p.Balance.Minor:
		return withHint(fmt.Errorf("%s: %s would take the purse over its maximum %s (it holds %s)", name, amt, p.Max, p.Balance),
			fmt.Sprintf("load at most %s", money.Amount{Minor: p.Max.Minor - p.Balance.Minor, Currency: p.Max.Currency}))
	case !load && amt.Minor > p.Balance.Minor:
		return withHint(fmt.Errorf("%s: the purse holds only %s, not %s", name, p.Balance, amt),
			"see the purse with 'cardlink card info --card "+*hf.card+"'")
	}
	auth.Memory, auth.Redial = ds.mem, ds.redial
	opts := device.LoadOptions{AuthOptions: auth, Amount: amt, Confirm: confirmer(e, *decline, *yes)}
	var res device.PurseResult
	if load {
		res, err = device.Load(ctx, ds.link, ds.id, ds.card, opts)
	} else {
		res, err = device.Unload(ctx, ds.link, ds.id, ds.card, opts)
	}
	if res.ServerKeys != nil {
		fmt.Fprintf(e.stdout, "server key rotated: %d key(s) now pinned, newest %s\n", len(res.ServerKeys), base64.StdEncoding.EncodeToString(res.ServerKeys[0]))
	}
	if err != nil {
		return purseError(err, res, load)
	}
	counter := res.Counter
	if res.OK() {
		// The card signed the load's receipt after its approval: show
		// the counter as it is now.
		if c, err := ds.card.Counter(ctx); err == nil {
			counter = c
		}
	}
	return purseResult(e.stdout, res, amt, counter, load)
}

// purseError adds hints to the failures of device load and unload that
// are errors rather than the server's verdict.
func purseError(err error, res device.PurseResult, load bool) error {
	var pe *iso7816.PINError
	var se *protocol.Error
	switch {
	case errors.As(err, &se) && se.Code == protocol.CodePurseState:
		return withHint(err, "the purse and the server's record of its loads are out of step: nothing was loaded; the card issuer's operator must look into it")
	case errors.As(err, &se) && se.Code == protocol.CodeCVMNotAccepted:
		return withHint(err, "the server does not accept this holder verification for the purse: try --pin or --bio")
	case errors.As(err, &pe):
		return withHint(err, "the card refused the PIN and did not sign: nothing was moved")
	case load && res.Load != nil && errors.Is(err, iso7816.ErrNoSpace):
		return withHint(fmt.Errorf("the card refused the signed load #%d of %s: %w", res.Loaded.Seq, res.Loaded.Amount, err),
			"it would take the purse over its maximum; the server keeps the load signed: unload first, then run 'cardlink device load' again to have it applied")
	case load && res.Load != nil && (errors.Is(err, iso7816.ErrConditions) || errors.Is(err, iso7816.ErrWrongData)):
		return withHint(fmt.Errorf("the card refused the signed load #%d of %s: %w", res.Loaded.Seq, res.Loaded.Amount, err),
			"the purse is out of step with the server, which keeps the load signed: run 'cardlink device load' again to have it handed out")
	case !load && errors.Is(err, iso7816.ErrConditions):
		return withHint(err, fmt.Sprintf("the purse holds %s: nothing was unloaded", res.Before.Balance))
	case errors.Is(err, device.ErrServerRefused), errors.Is(err, iso7816.ErrBlocked):
		return authError(err)
	}
	return err
}

// purseResult prints the outcome of device.Load or device.Unload; an
// error when nothing was moved.
// counter is the card's counter after the exchange (a load's receipt is
// signed after its approval).
func purseResult(w io.Writer, res device.PurseResult, asked money.Amount, counter uint32, load bool) error {
	what, done := "unloaded", "unloaded %s to the holder's account: %s\n"
	if load {
		what, done = "loaded", "loaded %s into the purse: %s\n"
	}
	if !res.OK() {
		msg := fmt.Sprintf("%s not %s: %s", asked, what, res.Code)
		if res.Code == protocol.CodePINIncorrect {
			msg += fmt.Sprintf(" (%d tries left)", res.TriesLeft)
		}
		switch res.Code {
		case protocol.CodeInsufficientFunds:
			return withHint(errors.New(msg), "the holder's account cannot pay it: an operator deposits with 'cardlink account deposit'")
		case protocol.CodePurseState:
			return withHint(errors.New(msg), "the purse and the server's record of its loads are out of step: the card issuer's operator must look into it")
		case protocol.CodeCVMNotAccepted:
			return withHint(errors.New(msg), "the server does not accept this holder verification for the purse: try --pin or --bio")
		case protocol.CodeTransactionExpired:
			return withHint(errors.New(msg), "the offer expired before the approval reached the server: try again")
		}
		return errors.New(msg)
	}
	switch {
	case load && res.Transaction.Amount.Minor == 0:
		// A load signed before and handed out again: no new approval.
		fmt.Fprintf(w, "loaded %s into the purse: load #%d signed before, applied now\n", res.Loaded.Amount, res.Loaded.Seq)
	case load:
		fmt.Fprintf(w, done, res.Loaded.Amount, res.CVM)
	default:
		fmt.Fprintf(w, done, res.Transaction.Amount, res.CVM)
	}
	fmt.Fprintf(w, "purse %s (was %s)%s\n", res.After.Balance, res.Before.Balance, loadNumber(res.After))
	fmt.Fprintf(w, "card %s counter %d\n", res.CardNumber, counter)
	return nil
}

// loadNumber is ", load #N" for a purse that took loads.
func loadNumber(p wallet.PurseState) string {
	if p.Seq == 0 {
		return ""
	}
	return fmt.Sprintf(", last load #%d", p.Seq)
}
