package cli

import (
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strings"
	"time"

	"cardlink/internal/server/pki"
)

const issuerRevokeHelp = `
Revokes the card NUMBER issued by the issuer in DIR: every certificate the
issuer made for that card number (the wallet certificate and the PIV slot 9A
certificate of 'cardlink card new', and any made later for the same number)
goes onto the issuer's certificate revocation list, DIR/crl.pem. The CRL is
signed again by the CA with the next CRL number and is valid for 7 days;
servers refuse the card from the moment they have the new CRL.

Revocation is final: there is no way to take a card off the CRL. Revoking a
card that is already revoked changes nothing and says so.

reasons (RFC 5280): unspecified, keyCompromise (the card or its PIN is
thought to be in someone else's hands), affiliationChanged, superseded (a
replacement card was issued), cessationOfOperation (the card is no longer
used), privilegeWithdrawn.`

func issuerRevokeCommand() *command {
	c := &command{name: "revoke", summary: "revoke a card: put its certificates on the issuer's CRL"}
	c.run = func(e *env, args []string) error {
		fs := newFlags(e, "cardlink issuer revoke",
			"cardlink issuer revoke --dir DIR --card NUMBER [--reason REASON]", issuerRevokeHelp)
		dir := fs.String("dir", "", "issuer directory made by 'cardlink issuer init' (required)")
		number := fs.String("card", "", "number of the card to revoke, 16 digits (required)")
		reasonName := fs.String("reason", "unspecified", "why the card is revoked (see the reasons above)")
		if err := parse(fs, args); err != nil {
			return err
		}
		if err := required(fs, "dir", "card"); err != nil {
			return err
		}
		if fs.NArg() > 0 {
			return usagef("issuer revoke: unexpected argument %q", fs.Arg(0))
		}
		reason, err := pki.ParseReason(*reasonName)
		if err != nil {
			return withHint(usagef("issuer revoke: --reason: %v", err), "run 'cardlink issuer revoke -h' for what each reason means")
		}
		cardNumber := strings.Join(strings.Fields(*number), "")
		iss, err := pki.Load(*dir)
		if err != nil {
			return withHint(err, "create an issuer with 'cardlink issuer init --dir "+*dir+"'")
		}
		rev, err := iss.RevokeCard(cardNumber, reason, time.Now())
		if errors.Is(err, pki.ErrUnknownCard) {
			return withHint(err, "the issuer's index "+*dir+"/issued.txt lists every card number it issued")
		}
		if err != nil {
			return err
		}
		if len(rev.Revoked) == 0 {
			fmt.Fprintf(e.stdout, "card %s was already revoked; CRL unchanged (number %v)\n", cardNumber, rev.CRL.Number)
			return nil
		}
		fmt.Fprintf(e.stdout, "card %s revoked (%v): %d certificate(s)\n", cardNumber, reason, len(rev.Revoked))
		for _, s := range rev.Revoked {
			fmt.Fprintf(e.stdout, "  serial %X\n", s)
		}
		if len(rev.Already) > 0 {
			fmt.Fprintf(e.stdout, "  (%d more already on the CRL)\n", len(rev.Already))
		}
		fmt.Fprintf(e.stdout, "CRL number %v written to %s/crl.pem, next update %s\n",
			rev.CRL.Number, *dir, rev.CRL.NextUpdate.UTC().Format(time.RFC3339))
		return nil
	}
	return c
}

const issuerCRLHelp = `
Prints the certificate revocation list of the issuer in DIR (DIR/crl.pem,
checked against the issuer's CA): its number, when it was signed, when the
next one is due, and every revoked certificate with its card number, time
and reason.

A server refuses every card once the CRL's next update has passed, so the
issuer must sign a fresh CRL at least every 7 days, revocations or not:
--update does that (run it from cron, for example), and also creates the
CRL of an issuer made before CRLs existed.`

func issuerCRLCommand() *command {
	c := &command{name: "crl", summary: "print the issuer's certificate revocation list, or sign a fresh one"}
	c.run = func(e *env, args []string) error {
		fs := newFlags(e, "cardlink issuer crl", "cardlink issuer crl --dir DIR [--update]", issuerCRLHelp)
		dir := fs.String("dir", "", "issuer directory made by 'cardlink issuer init' (required)")
		update := fs.Bool("update", false, "sign a fresh CRL (next CRL number, valid for 7 days) before printing it")
		if err := parse(fs, args); err != nil {
			return err
		}
		if err := required(fs, "dir"); err != nil {
			return err
		}
		if fs.NArg() > 0 {
			return usagef("issuer crl: unexpected argument %q", fs.Arg(0))
		}
		iss, err := pki.Load(*dir)
		if err != nil {
			return withHint(err, "create an issuer with 'cardlink issuer init --dir "+*dir+"'")
		}
		now := time.Now()
		var crl *x509.RevocationList
		if *update {
			crl, err = iss.UpdateCRL(now)
		} else {
			crl, err = iss.CRL()
		}
		if errors.Is(err, os.ErrNotExist) {
			return withHint(err, "sign one with 'cardlink issuer crl --dir "+*dir+" --update'")
		}
		if err != nil {
			return err
		}
		issued, err := iss.Issued()
		if err != nil {
			return err
		}
		cards := make(map[string]string, len(issued))
		for _, c := range issued {
			cards[string(c.Serial.Bytes())] = c.CardNumber
		}
		printCRL(e, crl, cards, now)
		if err := pki.CheckCRL(crl, iss.CA(), now); err != nil {
			fmt.Fprintf(e.stderr, "warning: %v\n", err)
			fmt.Fprintf(e.stderr, "hint: sign a fresh CRL with 'cardlink issuer crl --dir %s --update'\n", *dir)
		}
		return nil
	}
	return c
}

// printCRL prints crl; cards maps serial bytes to card numbers.
func printCRL(e *env, crl *x509.RevocationList, cards map[string]string, now time.Time) {
	w := e.stdout
	fmt.Fprintf(w, "CRL number:   %v\n", crl.Number)
	fmt.Fprintf(w, "issuer:       %s\n", crl.Issuer.CommonName)
	fmt.Fprintf(w, "this update:  %s\n", crl.ThisUpdate.UTC().Format(time.RFC3339))
	next := crl.NextUpdate.UTC().Format(time.RFC3339)
	if now.After(crl.NextUpdate) {
		next += " (passed)"
	}
	fmt.Fprintf(w, "next update:  %s\n", next)
	fmt.Fprintf(w, "revoked:      %d\n", len(crl.RevokedCertificateEntries))
	for _, r := range crl.RevokedCertificateEntries {
		number := cards[string(r.SerialNumber.Bytes())]
		if number == "" {
			number = "(not in the index)"
		}
		fmt.Fprintf(w, "  serial %-32s card %s  %s  %v\n", hexSerial(r.SerialNumber), number,
			r.RevocationTime.UTC().Format(time.RFC3339), pki.Reason(r.ReasonCode))
	}
}

func hexSerial(n *big.Int) string { return fmt.Sprintf("%X", n) }
