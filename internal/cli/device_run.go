package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"cardlink/internal/cardfile"
	"cardlink/internal/device"
	"cardlink/internal/hal"
	"cardlink/internal/hal/biometric"
	"cardlink/internal/hal/connector"
	"cardlink/internal/hal/power"
	"cardlink/internal/hal/printer"
	"cardlink/internal/hal/tui"
	"cardlink/internal/link"
)

const deviceRunHelp = `
Runs the device in this terminal: its 4x20 display, its keypad, its
power, link and card indicators. The holder works it with the keyboard or
the mouse, as the device's firmware (the controller) asks: insert the
card, choose a service from the menu (sign in, buy by reference code,
pay a pushed purchase, load and pay with the purse, balance, log,
e-goods, change or unblock the PIN), type the PIN (shown as stars; it goes
to the card, or to the server only inside the encrypted channel), review
and approve.

Keys: 0-9; Enter is OK, Esc is Cancel, Backspace is Clear; F1-F4, or a-d
on terminals without function keys; i inserts or removes the card;
Ctrl-C switches the device off. A mouse click on a key presses it.

The card in FILE starts in the reader (--inserted=false: out). --payee
NAME shows service 5 "Pay": the holder pays NAME from the purse offline
(the card debits itself; the receipt is printed); without it the device's
settings say ('cardlink device settings --payee'). The device
in DEVDIR is one made by 'cardlink device provision'; it talks to the
server it was provisioned for, or to --server.

--power chooses the power source the display shows and the controller
obeys: mains (the default, never low), battery, rechargeable or line
(the telephone line's tight budget), with --level the batteries' charge
in percent. Below the low threshold the device refuses to start a
transaction and says why; at the critical one it shuts down.

--peripherals FILE is the connector configuration (JSON: which printer
and fingerprint sensor are built in, attached to the external connector,
or absent; docs/device-hardware.md). Without it there is no printer and
no sensor, unless --printer FILE (ESC/POS receipts of each payment
appended to FILE, or a printer device such as /dev/usb/lp0) or --bio FILE
(a sensor that reads its template from FILE) adds one. --log FILE writes
what the device did (the terminal belongs to the display meanwhile).

'cardlink device --card FILE --device DEVDIR ...' does the same.

example:
  cardlink device run --card alice.card --device dev`

func deviceRunCommand() *command {
	c := &command{name: "run", summary: "run the interactive device in the terminal"}
	c.run = func(e *env, args []string) error {
		return deviceRun(e, args)
	}
	return c
}

// deviceRun runs the interactive device.
func deviceRun(e *env, args []string) error {
	fs := newFlags(e, "cardlink device run",
		"cardlink device run --card FILE --device DEVDIR [--server ADDR] [--payee NAME] [--power mains|battery|rechargeable|line] [--level PCT] [--peripherals FILE | --printer FILE --bio FILE] [--inserted=false] [--log FILE]",
		deviceRunHelp)
	cardPath := fs.String("card", "", "card file (required)")
	dir := fs.String("device", "", "device directory made by 'cardlink device provision' (required)")
	server := fs.String("server", "", "the server's device-listener address (default: the provisioned one)")
	payee := fs.String("payee", "", "merchant name the device pays from the purse offline (default: the settings')")
	src := fs.String("power", "mains", "power source: mains, battery, rechargeable or line")
	level := fs.Int("level", 100, "charge of the battery or rechargeable battery, in percent")
	periph := fs.String("peripherals", "", "connector configuration file: the printer and sensor built in or attached")
	printerPath := fs.String("printer", "", "file or printer device to append ESC/POS receipts to")
	bio := fs.String("bio", "", "file a fingerprint sensor reads its template from")
	inserted := fs.Bool("inserted", true, "the card starts in the reader")
	logPath := fs.String("log", "", "file to write the device's log to")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "card", "device"); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	const short = "device run"
	if *server != "" {
		if _, _, err := net.SplitHostPort(*server); err != nil {
			return usagef("%s: --server %q: want host:port", short, *server)
		}
	}
	if *periph != "" && (*printerPath != "" || *bio != "") {
		return usagef("%s: give --peripherals or --printer and --bio, not both", short)
	}
	pm, err := powerManager(short, *src, *level)
	if err != nil {
		return err
	}

	// Open everything before the terminal is taken over, so that errors
	// print as usual.
	dp, err := openDeviceParts(*dir, *cardPath, *server, *inserted)
	if err != nil {
		return err
	}
	defer dp.close()
	f, mem := dp.card, dp.mem
	id := dp.id
	ctl := &device.Controller{
		Reader: f.Reader,
		Memory: mem,
		Payee:  *payee,
		Dial:   tcpDial(dp.addr),
	}
	ctl.Power = pm
	if *periph != "" {
		pc, err := connector.Load(*periph)
		if err != nil {
			return err
		}
		if ctl.Sensor, err = pc.OpenSensor(); err != nil {
			return err
		}
		if ctl.Printer, err = pc.OpenPrinter(); err != nil {
			return err
		}
		if c, ok := ctl.Printer.(io.Closer); ok {
			defer c.Close()
		}
	}
	if *printerPath != "" {
		p, err := printer.Open(*printerPath, printer.Options{Cut: true})
		if err != nil {
			return err
		}
		defer p.Close()
		ctl.Printer = p
	}
	if *bio != "" {
		ctl.Sensor = biometric.File{Path: *bio}
	}
	if *logPath != "" {
		lf, err := os.OpenFile(*logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return fmt.Errorf("opening log: %w", err)
		}
		defer lf.Close()
		ctl.Log = slog.New(slog.NewTextHandler(lf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}

	ui, err := tui.Open(tui.Options{Title: "cardlink " + id.ID, Card: func() { toggleCard(f) }})
	if err != nil {
		return withHint(err, "run it in a terminal; 'cardlink device buy' and 'device auth' work without one")
	}
	return runDevice(e.ctx, ui, ctl)
}

// runDevice runs the UI and the controller on it until the holder quits
// the UI or ctx ends. A controller that stops on its own ends the UI,
// unless it shut down for power: then the display says so until the
// holder quits. A panic in the controller restores the terminal first.
func runDevice(ctx context.Context, ui *tui.UI, ctl *device.Controller) error {
	ctl.Display, ctl.Keypad = ui, ui
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				ui.Close()
				panic(r)
			}
		}()
		err := ctl.Run(ctx)
		if err != nil && !errors.Is(err, device.ErrShutdown) {
			ui.Close()
		}
		done <- err
	}()
	uiErr := ui.Run(ctx)
	cancel()
	err := <-done
	if uiErr != nil {
		return withHint(uiErr, "run it in a terminal; 'cardlink device buy' and 'device auth' work without one")
	}
	return err
}

// toggleCard takes the card out of the reader, or puts it back.
func toggleCard(f *cardfile.File) {
	if present, _ := f.Reader.Present(context.Background()); present {
		f.Reader.Remove()
	} else {
		f.Reader.Insert()
	}
}

// powerManager returns the power manager for --power and --level; nil
// for mains.
func powerManager(cmd, src string, level int) (hal.Power, error) {
	if level < 0 || level > 100 {
		return nil, usagef("%s: --level %d: want 0-100 (percent)", cmd, level)
	}
	var c power.Config
	switch src {
	case "mains":
		return nil, nil
	case "battery":
		c = power.DefaultConfig()
		c.Rechargeable = power.Store{}
		c.Battery.Level = level
	case "rechargeable":
		c = power.DefaultConfig()
		c.Battery = power.Store{}
		c.Rechargeable.Level = level
	case "line":
		c = power.Config{Line: true}
	default:
		return nil, usagef("%s: --power %q: want mains, battery, rechargeable or line", cmd, src)
	}
	m, err := power.New(c)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// deviceParts are what the commands that run the controller open: the
// device's memory, the card in its reader, and the server to dial.
type deviceParts struct {
	mem  *device.Memory
	id   device.Identity
	card *cardfile.File
	addr string // the provisioned server, or the one given instead
}

// openDeviceParts opens the device memory in dir and the card file at
// cardPath (taken out of the reader unless inserted); server, when set,
// replaces the provisioned server address. The caller closes the parts.
func openDeviceParts(dir, cardPath, server string, inserted bool) (*deviceParts, error) {
	mem, err := device.OpenMemory(filepath.Join(dir, deviceMemoryFile))
	if err != nil {
		return nil, withHint(err, "create a device with 'cardlink device provision --dir "+dir+" ...'")
	}
	id, err := mem.Identity()
	if err != nil {
		mem.Close()
		return nil, err
	}
	f, err := cardfile.Open(cardPath)
	if err != nil {
		mem.Close()
		return nil, err
	}
	if !inserted {
		f.Reader.Remove()
	}
	dp := &deviceParts{mem: mem, id: id, card: f, addr: id.Server}
	if server != "" {
		dp.addr = server
	}
	return dp, nil
}

func (dp *deviceParts) close() {
	dp.card.Close()
	dp.mem.Close()
}

// tcpDial returns a Controller's Dial: a TCP connection to addr.
func tcpDial(addr string) func(ctx context.Context) (link.Link, error) {
	return func(ctx context.Context) (link.Link, error) {
		var d net.Dialer
		nc, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("connecting to server: %w", err)
		}
		return nc, nil
	}
}
