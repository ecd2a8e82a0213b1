package cli

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"cardlink/internal/device"
	"cardlink/internal/iso7816"
	"cardlink/internal/protocol"
	"cardlink/internal/server/api"
	"cardlink/internal/txn"
)

const deviceBuyHelp = `
Pays a merchant's purchase request with the card in FILE through the
device in DEVDIR: the device fetches the request by the reference code the
merchant gave (--code, spaces allowed; or, without --code, a request the
merchant pushed to this card), shows the merchant, item and amount, the
holder approves and is verified (--pin, --online-pin, --bio, --server-bio
as for 'cardlink device auth'), the card signs exactly what was shown and
logs it, and the server checks the signature against its own copy, takes
the money from the holder's account and delivers the item's e-goods, which
the device stores on the card ('cardlink card info' lists them).

Headless by default: the transaction is printed and approved. --decline
declines it on the device; --yes=false asks on the terminal (y/N).

Prints the outcome, the card's counter and the goods stored. Exit status
0 means paid; 1, with a one-line reason, anything else (declined, wrong
PIN, insufficient funds, expired...): then nothing was paid.

example:
  cardlink device buy --card alice.card --device dev --code "4830 2714" --pin 1234`

func deviceBuyCommand() *command {
	c := &command{name: "buy", summary: "approve and pay a purchase request with a card"}
	c.run = func(e *env, args []string) error {
		fs := newFlags(e, "cardlink device buy",
			"cardlink device buy --card FILE --device DEVDIR [--code CODE] [--pin PIN | --online-pin PIN | --bio FILE | --server-bio FILE] [--decline] [--yes=false]",
			deviceBuyHelp)
		hf := addHolderFlags(fs)
		code := fs.String("code", "", "the purchase's reference code (8 digits); empty: a request pushed to the card")
		decline := fs.Bool("decline", false, "decline the transaction on the device")
		yes := fs.Bool("yes", true, "approve without asking; --yes=false asks on the terminal")
		timeout := fs.Duration("timeout", time.Minute, "how long the whole purchase may take")
		if err := parse(fs, args); err != nil {
			return err
		}
		if err := required(fs, "card", "device"); err != nil {
			return err
		}
		if err := noArgs(fs); err != nil {
			return err
		}
		ref := strings.Join(strings.Fields(*code), "")
		if ref != "" && (len(ref) != 8 || strings.Trim(ref, "0123456789") != "") {
			return usagef("device buy: --code %q: want the 8 digits the merchant gave", *code)
		}
		if ref != "" && !api.ValidReference(ref) {
			// The last digit is a check digit: catch the typo before
			// dialling the server.
			return withHint(usagef("device buy: --code %q: not a reference code", *code),
				"a digit is mistyped or two neighbours are swapped: check the code the merchant gave")
		}
		auth, err := hf.options("device buy")
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
		auth.Memory, auth.Redial = ds.mem, ds.redial
		opts := device.BuyOptions{AuthOptions: auth, Reference: ref, Confirm: confirmer(e, *decline, *yes)}
		res, err := device.Buy(ctx, ds.link, ds.id, ds.card, opts)
		if res.ServerKeys != nil {
			fmt.Fprintf(e.stdout, "server key rotated: %d key(s) now pinned, newest %s\n", len(res.ServerKeys), base64.StdEncoding.EncodeToString(res.ServerKeys[0]))
		}
		if err != nil {
			return buyError(err, ref)
		}
		return buyResult(e.stdout, res, ref)
	}
	return c
}

// confirmer returns the Confirm of device buy: it shows the transaction
// and approves, declines, or asks on the terminal.
func confirmer(e *env, decline, yes bool) func(context.Context, txn.Transaction) (bool, error) {
	return func(ctx context.Context, t txn.Transaction) (bool, error) {
		fmt.Fprintf(e.stdout, "merchant %s\n", t.Merchant)
		fmt.Fprintf(e.stdout, "item     %s\n", t.Item)
		fmt.Fprintf(e.stdout, "amount   %s\n", t.Amount)
		switch {
		case decline:
			fmt.Fprintln(e.stdout, "declined on the device")
			return false, nil
		case yes:
			return true, nil
		}
		return askYes(e.stdin, e.stdout, "approve? [y/N] ")
	}
}

// askYes asks a yes/no question on out and reads the answer from in: only
// "y" or "yes" approves.
func askYes(in io.Reader, out io.Writer, question string) (bool, error) {
	fmt.Fprint(out, question)
	line, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && line == "" {
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		return false, fmt.Errorf("reading the answer: %w", err)
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return true, nil
	}
	return false, nil
}

// buyError adds hints to the failures of device buy that are errors
// rather than the server's verdict.
func buyError(err error, ref string) error {
	var pe *iso7816.PINError
	var se *protocol.Error
	switch {
	case errors.As(err, &se) && se.Code == protocol.CodeTransactionUnknown:
		return withHint(err, unknownHint(ref))
	case errors.As(err, &se) && se.Code == protocol.CodeTransactionExpired:
		return withHint(err, "the request expired: ask the merchant for a new one")
	case errors.As(err, &pe):
		return withHint(err, "the card refused the PIN and did not sign: nothing was paid")
	case errors.Is(err, device.ErrServerRefused), errors.Is(err, iso7816.ErrBlocked):
		return authError(err)
	}
	return err
}

// buyResult prints the outcome of device.Buy; an error when not paid.
func buyResult(w io.Writer, res device.BuyResult, ref string) error {
	t := res.Transaction
	if res.Code != protocol.CodeOK {
		msg := fmt.Sprintf("not paid: %s", res.Code)
		if t.Merchant != "" {
			msg = fmt.Sprintf("%s to %s not paid: %s", t.Amount, t.Merchant, res.Code)
		}
		if res.Code == protocol.CodePINIncorrect {
			msg += fmt.Sprintf(" (%d tries left)", res.TriesLeft)
		}
		switch res.Code {
		case protocol.CodeHolderDeclined:
			return errors.New(msg)
		case protocol.CodeInsufficientFunds:
			return withHint(errors.New(msg), "the holder's account cannot pay it: an operator deposits with 'cardlink account deposit'")
		case protocol.CodeTransactionUnknown:
			return withHint(errors.New(msg), unknownHint(ref))
		case protocol.CodeTransactionExpired:
			return withHint(errors.New(msg), "the request expired: ask the merchant for a new one")
		case protocol.CodeCVMNotAccepted:
			return withHint(errors.New(msg), "the server does not accept this holder verification for this purchase: try --pin, --online-pin or --bio")
		}
		return errors.New(msg)
	}
	if res.PaidBefore {
		fmt.Fprintf(w, "paid before; goods delivered again\n")
		fmt.Fprintf(w, "card %s\n", res.CardNumber)
	} else {
		fmt.Fprintf(w, "paid %s to %s: %s\n", t.Amount, t.Merchant, res.CVM)
		fmt.Fprintf(w, "card %s counter %d\n", res.CardNumber, res.Counter)
	}
	for _, it := range res.Goods {
		fmt.Fprintf(w, "stored on the card: %s %q (%d bytes)\n", it.Kind, it.Title, len(it.Content))
	}
	return nil
}

// unknownHint is the hint for a purchase the server does not know.
func unknownHint(ref string) string {
	if ref == "" {
		return "no purchase request is pushed to this card: give the merchant's code with --code"
	}
	return "check the code: no pending purchase request has it (or it is for another card)"
}
