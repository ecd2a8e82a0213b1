package cli

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"cardlink/internal/cardfile"
	"cardlink/internal/iso7816"
	"cardlink/internal/money"
	"cardlink/internal/piv"
	"cardlink/internal/reader"
	"cardlink/internal/server/pki"
	"cardlink/internal/wallet"
)

func cardCommand() *command {
	return &command{
		name:    "card",
		summary: "issue, inspect and talk to virtual smart cards",
		subs:    []*command{cardNewCommand(), cardInfoCommand(), cardPayCommand(), cardAPDUCommand(), cardAttachCommand()},
	}
}

const cardNewHelp = `
Creates a new virtual smart card in FILE and personalizes it for the issuer in
DIR (made by 'cardlink issuer init'): the card generates its own ECDSA P-256
key pair inside the card, the issuer certifies the public key, and the card
number, PIN, PUK, purse currency, issuer keys and (optionally) an enrolled
biometric template are written before personalization is closed for good.
Unless --piv=false, the card's PIV applet is personalized too: a slot 9A key
generated on the card with a certificate from the same issuer, and a CHUID,
so that OpenSC, yubico-piv-tool and other PIV software can use the card
(docs/piv-applet.md; its PIN, PUK and management key start at the
well-known defaults and must be changed).

The file is the card's non-volatile memory: every update to it is atomic, so
a crash or power cut never leaves a half-written card. Treat it like the chip
itself: it holds the card's private key.`

func cardNewCommand() *command {
	c := &command{name: "new", summary: "issue a new card into a file"}
	c.run = func(e *env, args []string) error {
		fs := newFlags(e, "cardlink card new",
			"cardlink card new --issuer DIR --out FILE --pin PIN --puk PUK [--bio TEMPLATE] [flags]", cardNewHelp)
		issuerDir := fs.String("issuer", "", "issuer directory made by 'cardlink issuer init' (required)")
		out := fs.String("out", "", "card file to create; must not exist (required)")
		pin := fs.String("pin", "", "PIN, 4 to 12 digits (required)")
		puk := fs.String("puk", "", "PUK that unblocks the PIN, 8 digits (required)")
		bio := fs.String("bio", "", "file holding the biometric template to enroll (raw bytes, or hex text)")
		number := fs.String("number", "", "card number, 16 digits with a valid Luhn check digit (default: a new random number)")
		currency := fs.String("currency", "EUR", "ISO 4217 currency of the card's e-money purse")
		withPIV := fs.Bool("piv", true, "also personalize the PIV applet: a slot 9A key generated on the card, its certificate and a CHUID")
		purseMax := fs.String("purse-max", "1000", "the most the purse may hold, in units of --currency (e.g. 250.50)")
		if err := parse(fs, args); err != nil {
			return err
		}
		if err := required(fs, "issuer", "out", "pin", "puk"); err != nil {
			return err
		}
		cur, err := money.ParseCurrency(*currency)
		if err != nil {
			return usagef("card new: --currency: %v", err)
		}
		maxBalance, err := money.ParseAmount(*purseMax + " " + string(cur))
		if err != nil || maxBalance.Minor <= 0 {
			return usagef("card new: --purse-max %q: want a positive amount such as 250.50", *purseMax)
		}
		iss, err := pki.Load(*issuerDir)
		if err != nil {
			return withHint(err, "create an issuer with 'cardlink issuer init --dir "+*issuerDir+"'")
		}
		var template []byte
		if *bio != "" {
			if template, err = readTemplate(*bio); err != nil {
				return err
			}
		}
		cardNumber := *number
		if cardNumber == "" {
			if cardNumber, err = pki.NewCardNumber(nil); err != nil {
				return err
			}
		}
		if _, err := os.Stat(*out); err == nil {
			return fmt.Errorf("card new: %s already exists; refusing to overwrite a card", *out)
		}
		f, err := cardfile.Create(*out)
		if err != nil {
			return err
		}
		ok := false
		defer func() {
			f.Close()
			if !ok {
				os.Remove(*out)
			}
		}()
		conn, err := f.Connect(e.ctx)
		if err != nil {
			return err
		}
		defer conn.Close()
		cl, err := wallet.Select(e.ctx, conn)
		if err != nil {
			return err
		}
		p := wallet.Personalization{
			CardNumber:   cardNumber,
			PIN:          *pin,
			PUK:          *puk,
			BioTemplate:  template,
			Currency:     cur,
			MaxBalance:   maxBalance.Minor,
			IssuerKeyID:  iss.KeyID(),
			IssuerSigner: iss.OpsPublic(),
			OpsKeyID:     iss.OpsKeyID(),
		}
		var cert *x509.Certificate
		err = cl.Personalize(e.ctx, p, func(pub *ecdsa.PublicKey) (*x509.Certificate, error) {
			cert, err = iss.IssueCard(pub, cardNumber, time.Now())
			return cert, err
		})
		if err != nil {
			return err
		}
		var pivCert *x509.Certificate
		if *withPIV {
			err = piv.Personalize(e.ctx, conn, cardNumber, func(pub *ecdsa.PublicKey) (*x509.Certificate, error) {
				pivCert, err = iss.IssueCard(pub, cardNumber, time.Now())
				return pivCert, err
			})
			if err != nil {
				return err
			}
		}
		ok = true
		fmt.Fprintf(e.stdout, "card %s issued into %s\n", cardNumber, *out)
		fmt.Fprintf(e.stdout, "wallet certificate serial %X, valid until %s\n", cert.SerialNumber, cert.NotAfter.UTC().Format(time.DateOnly))
		if pivCert != nil {
			fmt.Fprintf(e.stdout, "PIV slot 9A certificate serial %X; PIV PIN %s, PUK %s and management key are the defaults: change them (docs/piv-applet.md)\n",
				pivCert.SerialNumber, piv.DefaultPIN, piv.DefaultPUK)
		}
		return nil
	}
	return c
}

// readTemplate reads a biometric template file: raw bytes, or hex text.
func readTemplate(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading biometric template: %w", err)
	}
	if t := strings.TrimSpace(string(b)); t != "" {
		if h, err := hex.DecodeString(strings.Join(strings.Fields(t), "")); err == nil {
			return h, nil
		}
	}
	return b, nil
}

const cardAPDUHelp = `
Powers the card in FILE, sends each APDU (hex, spaces and colons allowed) in
one session, and prints every command and response with the meaning of its
status word, like 'opensc-tool -s'. Responses are shown raw: a 61xx reply is
followed up only if you send GET RESPONSE (00 C0 00 00 xx) yourself. Changes
the card makes to its memory are saved to FILE.

example:
  cardlink card apdu --card alice.card 00A4040009F063617264 6C6E6B01 00CA005A00`

func cardAPDUCommand() *command {
	c := &command{name: "apdu", summary: "send raw APDUs to a card and print the responses"}
	c.run = func(e *env, args []string) error {
		fs := newFlags(e, "cardlink card apdu", "cardlink card apdu --card FILE HEX...", cardAPDUHelp)
		path := fs.String("card", "", "card file (required)")
		if err := parse(fs, args); err != nil {
			return err
		}
		if err := required(fs, "card"); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			return usagef("card apdu: no APDU given")
		}
		var apdus [][]byte
		for _, a := range fs.Args() {
			b, err := parseHex(a)
			if err != nil {
				return usagef("card apdu: %q: %v", a, err)
			}
			apdus = append(apdus, b)
		}
		f, err := cardfile.Open(*path)
		if err != nil {
			return err
		}
		defer f.Close()
		conn, err := f.Connect(e.ctx)
		if err != nil {
			return err
		}
		defer conn.Close()
		for _, a := range apdus {
			fmt.Fprintf(e.stdout, "> %s\n", spacedHex(a))
			resp, err := conn.Transmit(e.ctx, a)
			if err != nil {
				return fmt.Errorf("sending APDU: %w", err)
			}
			r, err := iso7816.ParseResponse(resp)
			if err != nil {
				return fmt.Errorf("reading response: %w", err)
			}
			if len(r.Data) > 0 {
				fmt.Fprintf(e.stdout, "< %s\n", spacedHex(r.Data))
			}
			fmt.Fprintf(e.stdout, "< %s\n", r.SW)
		}
		return nil
	}
	return c
}

func parseHex(s string) ([]byte, error) {
	s = strings.NewReplacer(" ", "", ":", "", "\t", "").Replace(s)
	if s == "" {
		return nil, errors.New("empty")
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, errors.New("not hexadecimal")
	}
	return b, nil
}

func spacedHex(b []byte) string {
	var sb strings.Builder
	for i, x := range b {
		if i > 0 {
			sb.WriteByte(' ')
		}
		fmt.Fprintf(&sb, "%02X", x)
	}
	return sb.String()
}

// openWallet opens a card file, powers the card and selects the wallet.
func openWallet(ctx context.Context, path string) (*cardfile.File, reader.Conn, *wallet.Client, error) {
	f, err := cardfile.Open(path)
	if err != nil {
		return nil, nil, nil, err
	}
	conn, err := f.Connect(ctx)
	if err != nil {
		f.Close()
		return nil, nil, nil, err
	}
	cl, err := wallet.Select(ctx, conn)
	if err != nil {
		conn.Close()
		f.Close()
		return nil, nil, nil, fmt.Errorf("selecting wallet applet: %w", err)
	}
	return f, conn, cl, nil
}
