package cli

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"cardlink/internal/cardfile"
	"cardlink/internal/iso7816"
	"cardlink/internal/money"
	"cardlink/internal/server/pki"
	"cardlink/internal/txn"
	"cardlink/internal/wallet"
)

const demoHelp = `
Walks through cardlink with no set-up: it starts a server (the one
'cardlink server' runs, on a SQLite database in a temporary directory),
issues a virtual smart card, provisions a device, and has the card holder
sign in and buy an e-book on the device — the device's 4x20 screen printed
at each step, the operator's and the merchant's commands shown as they
run. The purchase is approved by the card's signature over exactly what
the screen showed, posted to the ledger, and its licence key lands in the
card's e-goods store. It finishes in a few seconds, stops the server and
removes its files, unless --keep names a directory to leave them in.

--card-only walks through the card alone instead, with no server or
device: PIN checks, a challenge-response login, a signed purchase, the
e-money purse, the e-goods store and the on-card log, checking every
signature it gets back.`

func demoCommand() *command {
	c := &command{name: "demo", summary: "a server, a card and a device: sign in and buy, shown step by step"}
	c.run = func(e *env, args []string) error {
		fs := newFlags(e, "cardlink demo", "cardlink demo [--keep DIR] [--card-only]", demoHelp)
		keep := fs.String("keep", "", "directory (must not exist) to keep the server data, card and device in")
		cardOnly := fs.Bool("card-only", false, "walk through the card alone, with no server or device")
		if err := parse(fs, args); err != nil {
			return err
		}
		if err := noArgs(fs); err != nil {
			return err
		}
		dir := *keep
		if dir == "" {
			tmp, err := os.MkdirTemp("", "cardlink-demo-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(tmp)
			dir = tmp
		} else if err := os.Mkdir(dir, 0o700); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		if *cardOnly {
			return runDemo(e, dir, *keep != "")
		}
		return runDeviceDemo(e, dir, *keep != "")
	}
	return c
}

// demo holds the state of one walk-through.
type demo struct {
	e      *env
	step   int
	iss    *pki.Issuer
	cl     *wallet.Client
	number string
	cert   *x509.Certificate
}

func (d *demo) say(format string, args ...any) {
	d.step++
	fmt.Fprintf(d.e.stdout, "\n%d. %s\n", d.step, fmt.Sprintf(format, args...))
}

func (d *demo) show(format string, args ...any) {
	fmt.Fprintf(d.e.stdout, "   %s\n", fmt.Sprintf(format, args...))
}

func runDemo(e *env, dir string, kept bool) error {
	d := &demo{e: e}
	ctx := e.ctx
	fmt.Fprintln(e.stdout, "cardlink demo: a virtual smart card, issued and used")

	d.say("The issuer creates its certificate authority, and an operations key for purse loads and e-goods.")
	iss, err := pki.Init(filepath.Join(dir, "issuer"), "cardlink demo issuer")
	if err != nil {
		return err
	}
	d.iss = iss
	d.show("CA key id %X, ops key id %X", iss.KeyID(), iss.OpsKeyID())

	d.say("A blank card is personalized: it generates its key pair inside, the issuer certifies the public key.")
	path := filepath.Join(dir, "alice.card")
	f, err := cardfile.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	conn, err := f.Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if d.cl, err = wallet.Select(ctx, conn); err != nil {
		return err
	}
	if d.number, err = pki.NewCardNumber(nil); err != nil {
		return err
	}
	p := wallet.Personalization{
		CardNumber: d.number, PIN: "1234", PUK: "12345678", Currency: "EUR", MaxBalance: 100000,
		IssuerKeyID: iss.KeyID(), IssuerSigner: iss.OpsPublic(), OpsKeyID: iss.OpsKeyID(),
	}
	err = d.cl.Personalize(ctx, p, func(pub *ecdsa.PublicKey) (*x509.Certificate, error) {
		d.cert, err = iss.IssueCard(pub, d.number, time.Now())
		return d.cert, err
	})
	if err != nil {
		return fmt.Errorf("personalizing: %w", err)
	}
	if _, err := pki.VerifyCard(d.cert, iss.CA(), time.Now()); err != nil {
		return err
	}
	d.show("card %s, PIN 1234, PUK 12345678; certificate %X chains to the issuer CA", groupDigits(d.number), d.cert.SerialNumber)
	d.show("card answer-to-reset: %s", spacedHex(conn.ATR()))

	d.say("A wrong PIN. The card spends the try, and saves that, before it compares.")
	err = d.cl.VerifyPIN(ctx, "9999")
	var pe *iso7816.PINError
	if !errors.As(err, &pe) {
		return fmt.Errorf("wrong PIN: got %v, want a PIN error", err)
	}
	d.show("card says: %v", err)
	if err := d.cl.VerifyPIN(ctx, "1234"); err != nil {
		return err
	}
	d.show("the right PIN: accepted, tries back to 3")

	d.say("Login: the server sends a 32-byte challenge; the card signs it with purpose \"auth\".")
	challenge := make([]byte, 32)
	rand.Read(challenge)
	sig, err := d.cl.Authenticate(ctx, challenge, nil)
	if err != nil {
		return err
	}
	authData, err := wallet.AuthData(challenge, nil)
	if err != nil {
		return err
	}
	pub := d.cert.PublicKey.(*ecdsa.PublicKey)
	env := sig.Envelope(txn.PurposeAuth, d.number, authData)
	d.show("counter %d, holder verified by %s, signature %d bytes: valid=%t", sig.Counter, sig.CVM, len(sig.Sig), txn.VerifyEnvelope(pub, env, sig.Sig))

	d.say("A purchase: the device shows exactly what the card will sign.")
	t := txn.Transaction{
		Merchant: "Corner Books", Item: "Paperback: The Hobbit",
		Amount: money.Amount{Minor: 1299, Currency: "EUR"},
		Time:   time.Now().UTC().Truncate(time.Second), Nonce: make([]byte, 16),
	}
	rand.Read(t.ID[:])
	rand.Read(t.Nonce)
	canonical, err := t.Encode()
	if err != nil {
		return err
	}
	d.show("%s — %s — %s", t.Merchant, t.Item, t.Amount)
	if _, err := d.cl.SignTransaction(ctx, canonical, false); err != nil {
		d.show("without a fresh PIN the card refuses: %v", err)
	}
	if err := d.cl.VerifyPIN(ctx, "1234"); err != nil {
		return err
	}
	sig, err = d.cl.SignTransaction(ctx, canonical, false)
	if err != nil {
		return err
	}
	env = sig.Envelope(txn.PurposeTransaction, d.number, canonical)
	d.show("after the PIN: counter %d, %s, signature valid=%t", sig.Counter, sig.CVM, txn.VerifyEnvelope(pub, env, sig.Sig))
	login := sig.Envelope(txn.PurposeAuth, d.number, canonical)
	d.show("the same signature presented as a login: valid=%t", txn.VerifyEnvelope(pub, login, sig.Sig))

	if err := d.purse(); err != nil {
		return err
	}
	if err := d.goods(); err != nil {
		return err
	}

	d.say("The card's own log, read with READ RECORD:")
	in, err := d.cl.Info(ctx)
	if err != nil {
		return err
	}
	if err := printLog(e.stdout, d.cl, e, in); err != nil {
		return err
	}
	if kept {
		fmt.Fprintf(e.stdout, "\nthe issuer and card are in %s; try: cardlink card info --card %s\n", dir, path)
	} else {
		fmt.Fprintln(e.stdout, "\ndone; the temporary issuer and card were removed (use --keep DIR to keep them)")
	}
	return nil
}

func (d *demo) purse() error {
	ctx := d.e.ctx
	d.say("E-money: the issuer signs a load for the purse's next sequence number.")
	l := txn.Load{CardNumber: d.number, Seq: 1, Amount: money.Amount{Minor: 5000, Currency: "EUR"}}
	lsig, err := d.iss.SignLoad(&l)
	if err != nil {
		return err
	}
	signed := l.EncodeSigned(lsig)
	r, err := d.cl.Load(ctx, signed)
	if err != nil {
		return err
	}
	d.show("loaded %s: balance %s, card receipt valid=%t", l.Amount, r.Balance,
		txn.VerifyEnvelope(d.cert.PublicKey.(*ecdsa.PublicKey), r.Envelope(), r.Sig))
	if _, err := d.cl.Load(ctx, signed); err != nil {
		d.show("the same load again is refused: %v", err)
	}
	t := txn.Transaction{
		Merchant: "City Bakery", Item: "Sourdough loaf",
		Amount: money.Amount{Minor: 450, Currency: "EUR"},
		Time:   time.Now().UTC().Truncate(time.Second), Nonce: make([]byte, 16),
	}
	rand.Read(t.ID[:])
	rand.Read(t.Nonce)
	if err := d.cl.VerifyPIN(ctx, "1234"); err != nil {
		return err
	}
	dr, err := d.cl.Debit(ctx, &t)
	if err != nil {
		return err
	}
	d.show("paid %s to %s from the purse: balance %s, receipt for the merchant valid=%t", t.Amount, t.Merchant, dr.Balance,
		txn.VerifyEnvelope(d.cert.PublicKey.(*ecdsa.PublicKey), dr.Envelope(d.number), dr.Sig))
	return nil
}

func (d *demo) goods() error {
	ctx := d.e.ctx
	d.say("E-goods: the issuer signs a voucher into the card's store.")
	it := txn.Item{CardNumber: d.number, Kind: txn.ItemVoucher, Title: "Coffee voucher", Content: []byte("CODE-7F3A-2291")}
	rand.Read(it.ID[:])
	isig, err := d.iss.SignItem(&it)
	if err != nil {
		return err
	}
	if err := d.cl.StoreItem(ctx, it.EncodeSigned(isig)); err != nil {
		return err
	}
	got, gsig, err := d.cl.ReadItem(ctx, it.ID)
	if err != nil {
		return err
	}
	d.show("stored and read back %q (%s): %q, issuer signature valid=%t", got.Title, got.Kind, got.Content,
		txn.VerifyItem(d.iss.OpsPublic(), &got, gsig))
	return nil
}
