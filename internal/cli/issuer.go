package cli

import (
	"fmt"

	"cardlink/internal/server/pki"
)

func issuerCommand() *command {
	return &command{
		name:    "issuer",
		summary: "manage the card issuer's certificate authority",
		subs:    []*command{issuerInitCommand(), issuerRevokeCommand(), issuerCRLCommand()},
	}
}

const issuerInitHelp = `
Creates a card issuer in DIR: a certificate authority (ca.pem, ca-key.pem)
that certifies each card's key, and an operations key (ops.pem, ops-key.pem)
certified by the CA, with which the issuer signs purse loads and e-goods that
cards accept. Keys are ECDSA P-256; private keys are written with mode 0600.
An existing issuer in DIR is never overwritten.`

func issuerInitCommand() *command {
	c := &command{name: "init", summary: "create an issuer CA and operations key in a directory"}
	c.run = func(e *env, args []string) error {
		fs := newFlags(e, "cardlink issuer init", "cardlink issuer init --dir DIR [--name NAME]", issuerInitHelp)
		dir := fs.String("dir", "", "directory to create the issuer in (required)")
		name := fs.String("name", "cardlink issuer", "issuer name written into the CA certificate")
		if err := parse(fs, args); err != nil {
			return err
		}
		if err := required(fs, "dir"); err != nil {
			return err
		}
		iss, err := pki.Init(*dir, *name)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "issuer %q created in %s\n", *name, *dir)
		fmt.Fprintf(e.stdout, "CA key id:  %X\n", iss.KeyID())
		fmt.Fprintf(e.stdout, "ops key id: %X\n", iss.OpsKeyID())
		return nil
	}
	return c
}
