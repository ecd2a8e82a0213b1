package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"cardlink/internal/device"
	"cardlink/internal/hal/headless"
	"cardlink/internal/hal/power"
	"cardlink/internal/hal/printer"
)

// The device walk-through: a real server (the 'cardlink server' command,
// in-process, on a SQLite file in the demo's directory), the real commands
// an operator and a merchant run, and the device's controller driven by
// the headless keypad, its screens printed as the holder would see them.

// lockedBuffer is a bytes.Buffer safe for concurrent writers (the
// demo's server, a command's logger and a test).
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// deviceDemo holds one walk-through's state.
type deviceDemo struct {
	e       *env
	dir     string
	step    int
	devAddr string
	api     string
	opKey   string
	number  string
	drv     *headless.Driver
	receipt string // the printer's file
}

func (d *deviceDemo) say(format string, args ...any) {
	d.step++
	fmt.Fprintf(d.e.stdout, "\n%d. %s\n", d.step, fmt.Sprintf(format, args...))
}

func (d *deviceDemo) show(format string, args ...any) {
	fmt.Fprintf(d.e.stdout, "   %s\n", fmt.Sprintf(format, args...))
}

// cmd runs a cardlink command in-process, as a user would type it, and
// returns what it printed.
func (d *deviceDemo) cmd(ctx context.Context, args ...string) (string, error) {
	var out, errOut bytes.Buffer
	ce := &env{ctx: ctx, stdin: strings.NewReader(""), stdout: &out, stderr: &errOut}
	fmt.Fprintf(d.e.stdout, "   $ cardlink %s\n", strings.Join(quoteArgs(args), " "))
	if err := dispatch(ce, root(), nil, args); err != nil {
		return out.String(), fmt.Errorf("cardlink %s: %w", args[0], err)
	}
	return out.String(), nil
}

func quoteArgs(args []string) []string {
	q := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " '\"") {
			a = "'" + a + "'"
		}
		q[i] = a
	}
	return q
}

// find returns the first group of re in s, or an error naming what.
func find(s, re, what string) (string, error) {
	m := regexp.MustCompile(re).FindStringSubmatch(s)
	if m == nil {
		return "", fmt.Errorf("demo: no %s in %q", what, s)
	}
	return m[1], nil
}

// screen prints the device's display as it is now.
func (d *deviceDemo) screen() {
	for _, line := range strings.Split(strings.TrimRight(headless.Box(d.drv.Screen()), "\n"), "\n") {
		fmt.Fprintf(d.e.stdout, "      %s\n", line)
	}
}

// play runs a short script on the device and prints the screen it ends on.
func (d *deviceDemo) play(ctx context.Context, script string) error {
	s, err := headless.Parse("demo", []byte(script))
	if err != nil {
		return err
	}
	if err := d.drv.Run(ctx, s, headless.Options{Timeout: 30 * time.Second}); err != nil {
		return fmt.Errorf("demo device: %w", err)
	}
	d.screen()
	return nil
}

func runDeviceDemo(e *env, dir string, kept bool) (err error) {
	d := &deviceDemo{e: e, dir: dir}
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	fmt.Fprintln(e.stdout, "cardlink demo: a server, a card and a device — a sign-in and a purchase with e-goods")

	// 1. The server, as 'cardlink server' runs it, until the demo ends.
	d.say("The server starts: an issuer CA, an operations key, an operator key and a SQLite database in %s.", filepath.Join(dir, "server"))
	data := filepath.Join(dir, "server")
	addrs := filepath.Join(dir, "addrs")
	serverLog := &lockedBuffer{}
	se := &env{ctx: ctx, stdin: strings.NewReader(""), stdout: serverLog, stderr: serverLog}
	served := make(chan error, 1)
	go func() {
		served <- dispatch(se, root(), nil, []string{"server", "--data", data,
			"--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--addr-file", addrs})
	}()
	defer func() {
		cancel()
		if serr := <-served; serr != nil && err == nil {
			err = fmt.Errorf("demo server: %w", serr)
		}
		if err != nil && serverLog.String() != "" {
			fmt.Fprintf(e.stderr, "the server said:\n%s", serverLog.String())
		}
	}()
	if err := waitAddrs(ctx, addrs, served, d); err != nil {
		return err
	}
	d.show("device listener %s (Noise IK), HTTP API %s", d.devAddr, d.api)
	d.opKey = filepath.Join(data, "operator.key")

	// 2. A card and a device.
	d.say("The issuer personalizes a card for Alice: the card makes its key pair inside; the issuer certifies it.")
	cardPath := filepath.Join(dir, "alice.card")
	out, err := d.cmd(ctx, "card", "new", "--issuer", filepath.Join(data, "issuer"), "--out", cardPath,
		"--pin", "1234", "--puk", "12345678", "--piv=false")
	if err != nil {
		return err
	}
	if d.number, err = find(out, `card (\d{16}) issued`, "card number"); err != nil {
		return err
	}
	d.show("card %s, PIN 1234", groupDigits(d.number))

	d.say("A device is provisioned: its Noise key is registered, and it pins the server's key.")
	devDir := filepath.Join(dir, "device")
	if _, err := d.cmd(ctx, "device", "provision", "--dir", devDir, "--name", "kitchen-table",
		"--server", d.devAddr, "--http", d.api, "--operator-key-file", d.opKey); err != nil {
		return err
	}

	dp, err := openDeviceParts(devDir, cardPath, "", false) // the holder inserts the card below
	if err != nil {
		return err
	}
	defer dp.close()
	f := dp.card
	pm, err := power.New(power.DefaultConfig())
	if err != nil {
		return err
	}
	d.receipt = filepath.Join(dir, "receipts.escpos")
	prn, err := printer.Open(d.receipt, printer.Options{Cut: true})
	if err != nil {
		return err
	}
	defer prn.Close()
	d.drv = headless.New()
	ctl := &device.Controller{
		Display: d.drv, Keypad: d.drv, Reader: f.Reader, Power: pm, Printer: prn, Memory: dp.mem,
		Dial: tcpDial(dp.addr),
	}
	dctx, stopDevice := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- ctl.Run(dctx) }()
	defer func() {
		stopDevice()
		if rerr := <-ran; rerr != nil && err == nil {
			err = fmt.Errorf("demo device: %w", rerr)
		}
	}()
	if err := d.play(ctx, "expect Insert card\n"); err != nil {
		return err
	}

	// 3. Sign in.
	d.say("Alice inserts her card. The device reads it and offers its services.")
	f.Reader.Insert()
	if err := d.play(ctx, "expect 1 Sign in\n"); err != nil {
		return err
	}
	d.say("She signs in (key 1) and types her PIN: the display shows stars; the PIN goes to the card only.")
	if err := d.play(ctx, "press 1\nexpect PIN:\npress 1234\nexpect ****\n"); err != nil {
		return err
	}
	d.show("after OK: the device opens the Noise channel, the server sends a 32-byte challenge,")
	d.show("the card checks the PIN and signs it; the server checks certificate, counter and signature.")
	if err := d.play(ctx, "press OK\nexpect Signed in\n"); err != nil {
		return err
	}
	if err := d.play(ctx, "press OK\nexpect 1 Sign in\n"); err != nil {
		return err
	}

	// 4. A merchant asks for money.
	d.say("An operator opens a shop and puts money in Alice's account; the shop asks for a payment.")
	shopKey := filepath.Join(dir, "shop.key")
	if _, err := d.cmd(ctx, "merchant", "create", "--name", "Corner Books", "--http", d.api,
		"--operator-key-file", d.opKey, "--key-out", shopKey); err != nil {
		return err
	}
	out, err = d.cmd(ctx, "merchant", "item", "add", "--http", d.api, "--key-file", shopKey,
		"--name", "E-book: Flatland", "--price", "12.99", "--stock", "10",
		"--deliver", "licence", "--payload", "FLAT-1884-ABBT")
	if err != nil {
		return err
	}
	item, err := find(out, `item (item_\w+) added`, "item id")
	if err != nil {
		return err
	}
	if _, err := d.cmd(ctx, "account", "deposit", "--http", d.api, "--operator-key-file", d.opKey,
		"--card", d.number, "--amount", "50.00", "--idempotency-key", "demo-deposit"); err != nil {
		return err
	}
	out, err = d.cmd(ctx, "merchant", "purchase", "--http", d.api, "--key-file", shopKey, "--item", item)
	if err != nil {
		return err
	}
	pur, err := find(out, `purchase (pur_\w+) `, "purchase id")
	if err != nil {
		return err
	}
	code, err := find(out, `reference (\d{4} \d{4})`, "reference code")
	if err != nil {
		return err
	}
	d.show("the shop tells Alice the reference code: %s", code)

	// 5. The purchase on the device.
	d.say("Alice chooses Buy (key 2) and types the code.")
	digits := strings.ReplaceAll(code, " ", "")
	if err := d.play(ctx, "press 2\nexpect Reference code:\npress "+digits+"\nexpect "+digits+"\n"); err != nil {
		return err
	}
	d.say("The device fetches the transaction and shows exactly what the card will sign.")
	if err := d.play(ctx, "press OK\nexpect Pay 12.99 EUR\n"); err != nil {
		return err
	}
	d.say("She approves (OK), and only then types her PIN.")
	if err := d.play(ctx, "press OK\nexpect PIN:\npress 1234\nexpect ****\n"); err != nil {
		return err
	}
	d.show("the card checks the PIN, counts, signs the canonical transaction and logs it; the server")
	d.show("verifies the signature over its own copy, posts the ledger transfer and signs the e-good.")
	if err := d.play(ctx, "press OK\nexpect Paid 12.99 EUR\n"); err != nil {
		return err
	}
	out, err = d.cmd(ctx, "merchant", "status", "--http", d.api, "--key-file", shopKey, "--wait", "30s", pur)
	if err != nil {
		return err
	}
	d.show("%s", firstLine(out))
	// 6. The e-good on the card.
	d.say("The licence key is in the card's e-goods store; the device shows it (F1 more, 8 Goods, F2 show).")
	if err := d.play(ctx, "press OK\nexpect F1 more\npress F1\nexpect 8 Goods\npress 8\nexpect E-good 1/1\npress F2\nexpect FLAT-1884-ABBT\n"); err != nil {
		return err
	}
	if b, err := os.ReadFile(d.receipt); err == nil {
		if doc, err := printer.Decode(b); err == nil {
			d.show("the receipt the device printed (ESC/POS, decoded):")
			for _, line := range strings.Split(strings.TrimRight(doc.Text(), "\n "), "\n") {
				if strings.TrimSpace(line) == "" {
					continue
				}
				d.show("  | %s", line)
			}
		}
	}

	d.say("She ends (CANCEL) and takes her card.")
	if err := d.play(ctx, "press OK\nexpect 9 Change PIN\npress CANCEL\nexpect Remove card\n"); err != nil {
		return err
	}
	f.Reader.Remove()
	if err := d.play(ctx, "expect Insert card\n"); err != nil {
		return err
	}
	out, err = d.cmd(ctx, "account", "show", "--http", d.api, "--operator-key-file", d.opKey, d.number)
	if err != nil {
		return err
	}
	if bal, err := find(out, `(?m)^(balance .*)$`, "balance"); err == nil {
		d.show("Alice's account: %s", bal)
	} else {
		d.show("%s", firstLine(out))
	}

	if kept {
		fmt.Fprintf(e.stdout, "\nthe server's data, the card and the device are in %s; run the device yourself:\n", dir)
		fmt.Fprintf(e.stdout, "  cardlink server --data %s &\n  cardlink device run --card %s --device %s\n", data, cardPath, devDir)
	} else {
		fmt.Fprintln(e.stdout, "\ndone; the server stopped and its temporary files were removed (--keep DIR keeps them)")
	}
	return nil
}

// waitAddrs waits, at most 30 s, for the server's address file.
func waitAddrs(ctx context.Context, path string, served chan error, d *deviceDemo) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if b, err := os.ReadFile(path); err == nil {
			var err1, err2 error
			d.devAddr, err1 = find(string(b), `(?m)^device (\S+)$`, "device address")
			d.api, err2 = find(string(b), `(?m)^http (\S+)$`, "HTTP address")
			return errors.Join(err1, err2)
		}
		select {
		case err := <-served:
			served <- nil // for the caller's deferred wait; err is reported here
			if err == nil {
				err = errors.New("it stopped")
			}
			return fmt.Errorf("demo server did not start: %w", err)
		case <-ctx.Done():
			return fmt.Errorf("demo server did not start: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
