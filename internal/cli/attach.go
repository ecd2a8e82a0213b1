package cli

import (
	"log/slog"

	"cardlink/internal/cardfile"
	"cardlink/internal/reader/vpcd"

	// The pcsc: reader URI scheme, for commands that open readers by URI.
	_ "cardlink/internal/reader/pcsc"
)

const cardAttachHelp = `
Puts the card in FILE into pcscd's virtual reader through vsmartcard's vpcd
driver (Debian package vsmartcard-vpcd), so that every PC/SC application on
this machine sees it in the reader "Virtual PCD 00 00": opensc-tool,
pkcs11-tool, yubico-piv-tool, piv-go, and cardlink's own pcsc: reader driver.

The command connects to the vpcd driver inside pcscd, serves the card until
it is stopped with Ctrl-C (SIGINT) or SIGTERM, and connects again whenever
pcscd restarts. Connections and power events are logged to stderr. Every
change the card makes to its memory is written to FILE at once.

example:
  pcscd --foreground &       # unless pcscd runs already
  cardlink card attach --card alice.card &
  opensc-tool --list-readers

See docs/pcsc.md for the setup and for troubleshooting.`

func cardAttachCommand() *command {
	c := &command{name: "attach", summary: "put a card into pcscd's virtual reader (vpcd)"}
	c.run = func(e *env, args []string) error {
		fs := newFlags(e, "cardlink card attach", "cardlink card attach --card FILE [--vpcd HOST:PORT]", cardAttachHelp)
		path := fs.String("card", "", "card file (required)")
		addr := fs.String("vpcd", vpcd.DefaultAddr, "address where pcscd's vpcd driver listens")
		verbose := fs.Bool("v", false, "also log every dial attempt")
		if err := parse(fs, args); err != nil {
			return err
		}
		if err := required(fs, "card"); err != nil {
			return err
		}
		if fs.NArg() > 0 {
			return usagef("card attach: unexpected arguments %q", fs.Args())
		}
		level := slog.LevelInfo
		if *verbose {
			level = slog.LevelDebug
		}
		log := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level}))
		f, err := cardfile.Open(*path)
		if err != nil {
			return err
		}
		defer f.Close()
		log.Info("attaching card", "card", *path, "vpcd", *addr)
		if err := vpcd.NewClient(*addr, f.Card, log).Run(e.ctx); err != nil {
			return withHint(err, "give --vpcd as HOST:PORT, such as "+vpcd.DefaultAddr)
		}
		log.Info("stopped", "card", *path)
		return nil
	}
	return c
}
