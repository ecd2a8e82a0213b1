package cli

import (
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"cardlink/internal/iso7816"
	"cardlink/internal/piv"
	"cardlink/internal/reader"
	"cardlink/internal/txn"
	"cardlink/internal/wallet"
)

const cardInfoHelp = `
Powers the card in FILE and shows what it holds that is not secret: the ATR,
the card number, the certificate, the issuer's key ids, the transaction
counter, the PIN, PUK and biometric try counters, the purse, the transaction
log and the e-goods store, and how full its memory is. Private keys, PIN and
PUK never leave the card, so they cannot be shown. Reading does not change
the card.`

func cardInfoCommand() *command {
	c := &command{name: "info", summary: "show what is on a card (never secrets)"}
	c.run = func(e *env, args []string) error {
		fs := newFlags(e, "cardlink card info", "cardlink card info --card FILE", cardInfoHelp)
		path := fs.String("card", "", "card file (required)")
		if err := parse(fs, args); err != nil {
			return err
		}
		if err := required(fs, "card"); err != nil {
			return err
		}
		f, conn, cl, err := openWallet(e.ctx, *path)
		if err != nil {
			return err
		}
		defer f.Close()
		defer conn.Close()
		in, err := cl.Info(e.ctx)
		if err != nil {
			return err
		}
		w := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
		row := func(k, format string, args ...any) { fmt.Fprintf(w, "%s:\t%s\n", k, fmt.Sprintf(format, args...)) }
		row("card file", "%s", *path)
		atr := conn.ATR()
		if a, err := iso7816.ParseATR(atr); err == nil {
			row("ATR", "%s (T=%s)", spacedHex(atr), joinInts(a.Protocols, ",T="))
		} else {
			row("ATR", "%s (%v)", spacedHex(atr), err)
		}
		row("memory", "%d of %d bytes used", f.NVM.Used(), f.NVM.Capacity())
		row("lifecycle", "%s", in.Lifecycle)
		if in.CardNumber == "" {
			w.Flush()
			fmt.Fprintln(e.stdout, "the card is not personalized")
			return nil
		}
		row("card number", "%s", groupDigits(in.CardNumber))
		if cert := in.Certificate; cert != nil {
			row("certificate", "%s, serial %X", cert.Subject.CommonName, cert.SerialNumber)
			row("  issued by", "%s", cert.Issuer.CommonName)
			row("  valid", "%s to %s", cert.NotBefore.UTC().Format(time.DateOnly), cert.NotAfter.UTC().Format(time.DateOnly))
		}
		row("CA key id", "%s", strings.ToUpper(hex.EncodeToString(in.CAKeyID)))
		row("ops key id", "%s", strings.ToUpper(hex.EncodeToString(in.OpsKeyID)))
		row("counter", "%d (signatures made)", in.Counter)
		row("PIN", "%s", tries(in.PINTries))
		row("PUK", "%s", tries(in.PUKTries))
		if in.BioEnrolled {
			row("biometric", "enrolled, %s, match threshold %d", tries(in.BioTries), in.BioThreshold)
		} else {
			row("biometric", "not enrolled")
		}
		if p, err := cl.Purse(e.ctx); err == nil {
			row("purse", "%s (max %s), last load #%d", p.Balance, p.Max, p.Seq)
		} else {
			row("purse", "unreadable: %v", err)
		}
		printPIV(e, conn, row)
		w.Flush()
		// printPIV selected the PIV applet: back to the wallet.
		if cl, err = wallet.Select(e.ctx, conn); err != nil {
			return err
		}
		if err := printLog(e.stdout, cl, e, in); err != nil {
			return err
		}
		return printItems(e.stdout, cl, e)
	}
	return c
}

// printPIV adds the PIV applet's public state: try counters, the slot 9A
// certificate and the CHUID's GUID. A card without PIV data says so.
func printPIV(e *env, conn reader.Conn, row func(k, format string, args ...any)) {
	p, err := piv.Select(e.ctx, conn)
	if err != nil {
		row("PIV", "not available: %v", err)
		return
	}
	if limit, left, err := p.Retries(e.ctx, false); err == nil {
		row("PIV PIN", "%s (of %d)", tries(left), limit)
	}
	if cert, err := p.Certificate(e.ctx, piv.SlotAuthentication); err == nil {
		row("PIV 9A", "%s, serial %X, until %s", cert.Subject.CommonName, cert.SerialNumber, cert.NotAfter.UTC().Format(time.DateOnly))
	} else {
		row("PIV 9A", "no certificate")
	}
	if ch, err := p.CHUID(e.ctx); err == nil {
		row("PIV CHUID", "GUID %X, expires %s", ch.GUID, ch.Expiry.UTC().Format(time.DateOnly))
	}
}

func printLog(out io.Writer, cl *wallet.Client, e *env, in wallet.Info) error {
	fmt.Fprintf(out, "\ntransaction log: %d of %d records (newest first)\n", in.LogUsed, in.LogCapacity)
	recs, err := cl.Log(e.ctx)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	for _, r := range recs {
		what := fmt.Sprintf("%d bytes", len(r.Payload))
		if t := r.Transaction; t != nil {
			what = fmt.Sprintf("%s\t%s: %s\t%s", t.Amount, t.Merchant, t.Item, t.Time.UTC().Format(time.DateTime))
		} else if r.Purpose == txn.PurposeLoadReceipt {
			if l, err := txn.ParseLoad(r.Payload); err == nil {
				what = fmt.Sprintf("%s\tload #%d", l.Amount, l.Seq)
			}
		}
		fmt.Fprintf(w, "  %d\t#%d\t%s\t%s\t%s\n", r.Number, r.Counter, r.Purpose, r.CVM, what)
	}
	return w.Flush()
}

func printItems(out io.Writer, cl *wallet.Client, e *env) error {
	items, err := cl.Items(e.ctx)
	if err != nil {
		return err
	}
	noun := "items"
	if len(items) == 1 {
		noun = "item"
	}
	fmt.Fprintf(out, "\ne-goods: %d %s\n", len(items), noun)
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	for _, it := range items {
		fmt.Fprintf(w, "  %X\t%s\t%q\t%d bytes\n", it.ID, it.Kind, it.Title, it.ContentLen)
	}
	return w.Flush()
}

func tries(n int) string {
	switch n {
	case 0:
		return "blocked"
	case 1:
		return "1 try left"
	}
	return fmt.Sprintf("%d tries left", n)
}

func groupDigits(s string) string {
	var parts []string
	for len(s) > 4 {
		parts = append(parts, s[:4])
		s = s[4:]
	}
	return strings.Join(append(parts, s), " ")
}

func joinInts(xs []int, sep string) string {
	var s []string
	for _, x := range xs {
		s = append(s, fmt.Sprint(x))
	}
	return strings.Join(s, sep)
}
