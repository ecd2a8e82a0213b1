package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"cardlink/internal/device"
	"cardlink/internal/hal/headless"
	"cardlink/internal/link"
)

const deviceScriptHelp = `
Runs the device's firmware (the controller) with a scripted display and
keypad instead of a person: the script in FILE.txt says what to expect
on the display and which keys to press, and the device talks to the real
server as 'cardlink device run' does. It prints the transcript (every
screen, the indicators, the keys pressed and the events) to standard
output, and to --transcript OUT; a step that fails prints the transcript
so far, names the script line and exits non-zero.

The script language (docs/device.md):

  # comment
  expect TEXT        wait until a screen shows TEXT on one row
  screen             wait until the whole screen is the next 4 lines
  |...|              (the 4 rows, between bars)
  press 1234 OK      press keys: 0-9, OK, CANCEL, CLEAR, F1-F4
  event NAME ARGS    remove-card, insert-card (the card in FILE),
                     link-down, link-up (dialling fails or works again),
                     cut-link (the connection open now drops)

Each wait is bounded by --step (30s). The card starts in the reader
(--inserted=false: out). --payee sets the offline payee, as in
'cardlink device run'; the device's settings apply otherwise
('cardlink device settings').

example:
  cardlink device script --card alice.card --device dev --script buy.txt --transcript buy.out`

func deviceScriptCommand() *command {
	c := &command{name: "script", summary: "run the device with a scripted display and keypad, print the transcript"}
	c.run = deviceScript
	return c
}

// scriptLink is the device's link for a script: its events take it down
// and cut the connection open.
type scriptLink struct {
	addr string
	mu   sync.Mutex
	down bool
	conn net.Conn
}

func (s *scriptLink) dial(ctx context.Context) (link.Link, error) {
	s.mu.Lock()
	down := s.down
	s.mu.Unlock()
	if down {
		return nil, errors.New("connecting to server: link down (script)")
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return nil, fmt.Errorf("connecting to server: %w", err)
	}
	s.mu.Lock()
	s.conn = nc
	s.mu.Unlock()
	return nc, nil
}

func (s *scriptLink) set(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
}

func (s *scriptLink) cut() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return errors.New("no connection to cut")
	}
	return s.conn.Close()
}

// deviceScript runs the controller with the headless driver.
func deviceScript(e *env, args []string) error {
	fs := newFlags(e, "cardlink device script",
		"cardlink device script --card FILE --device DEVDIR --script FILE.txt [--transcript OUT] [--server ADDR] [--payee NAME] [--inserted=false] [--step D]",
		deviceScriptHelp)
	cardPath := fs.String("card", "", "card file (required)")
	dir := fs.String("device", "", "device directory made by 'cardlink device provision' (required)")
	scriptPath := fs.String("script", "", "the script to play (required)")
	out := fs.String("transcript", "", "file to write the transcript to")
	server := fs.String("server", "", "the server's device-listener address (default: the provisioned one)")
	payee := fs.String("payee", "", "merchant name the device pays from the purse offline (default: the settings')")
	inserted := fs.Bool("inserted", true, "the card starts in the reader")
	step := fs.Duration("step", 30*time.Second, "how long each expect waits")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "card", "device", "script"); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	const short = "device script"
	if *server != "" {
		if _, _, err := net.SplitHostPort(*server); err != nil {
			return usagef("%s: --server %q: want host:port", short, *server)
		}
	}
	if *step <= 0 {
		return usagef("%s: --step %v: want a positive duration", short, *step)
	}
	src, err := os.ReadFile(*scriptPath)
	if err != nil {
		return fmt.Errorf("reading script: %w", err)
	}
	script, err := headless.Parse(filepath.Base(*scriptPath), src)
	if err != nil {
		return err
	}
	dp, err := openDeviceParts(*dir, *cardPath, *server, *inserted)
	if err != nil {
		return err
	}
	defer dp.close()
	f, mem := dp.card, dp.mem
	sl := &scriptLink{addr: dp.addr}

	drv := headless.New()
	drv.Handle("remove-card", func(context.Context, []string) error { f.Reader.Remove(); return nil })
	drv.Handle("insert-card", func(context.Context, []string) error { f.Reader.Insert(); return nil })
	drv.Handle("link-down", func(context.Context, []string) error { sl.set(true); return nil })
	drv.Handle("link-up", func(context.Context, []string) error { sl.set(false); return nil })
	drv.Handle("cut-link", func(context.Context, []string) error { return sl.cut() })
	ctl := &device.Controller{Display: drv, Keypad: drv, Reader: f.Reader, Memory: mem, Dial: sl.dial, Payee: *payee}

	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- ctl.Run(ctx) }()
	played := drv.Run(ctx, script, headless.Options{Timeout: *step})
	cancel()
	runErr := <-ran
	tr := drv.Transcript()
	fmt.Fprint(e.stdout, tr)
	if *out != "" {
		if err := os.WriteFile(*out, []byte(tr), 0o644); err != nil {
			return fmt.Errorf("writing transcript: %w", err)
		}
	}
	if played != nil {
		return played
	}
	if runErr != nil {
		return fmt.Errorf("device: %w", runErr)
	}
	return nil
}

const deviceSettingsHelp = `
Shows the settings in the device's memory (its NVM), after changing those
given: --payee, the merchant the device pays from the purse offline
(service 5 "Pay"; empty hides it); --holder-timeout, how long the device
waits for a key (whole seconds, 10s to 10m; 0 is the firmware's 2m);
--receipts, whether the printer prints receipts. The change is one atomic
update of the memory file: a power cut leaves the old settings or the new
ones. The device reads them at each card.

example:
  cardlink device settings --device dev --payee 'Corner Shop' --holder-timeout 90s`

func deviceSettingsCommand() *command {
	c := &command{name: "settings", summary: "show or change the device's settings (payee, holder timeout, receipts)"}
	c.run = deviceSettings
	return c
}

func deviceSettings(e *env, args []string) error {
	fs := newFlags(e, "cardlink device settings",
		"cardlink device settings --device DEVDIR [--payee NAME] [--holder-timeout D] [--receipts=BOOL]",
		deviceSettingsHelp)
	dir := fs.String("device", "", "device directory made by 'cardlink device provision' (required)")
	payee := fs.String("payee", "", "merchant name the device pays from the purse offline; empty hides the service")
	timeout := fs.Duration("holder-timeout", 0, "how long the device waits for a key (0: the firmware's)")
	receipts := fs.Bool("receipts", true, "print receipts")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "device"); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	mem, err := device.OpenMemory(filepath.Join(*dir, deviceMemoryFile))
	if err != nil {
		return withHint(err, "create a device with 'cardlink device provision --dir "+*dir+" ...'")
	}
	defer mem.Close()
	st, err := mem.Settings()
	if err != nil {
		return err
	}
	changed := false
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "payee":
			st.Payee, changed = *payee, true
		case "holder-timeout":
			st.HolderTimeout, changed = *timeout, true
		case "receipts":
			st.NoReceipts, changed = !*receipts, true
		}
	})
	if changed {
		if err := st.Validate(); err != nil {
			return usagef("device settings: %v", err)
		}
		if err := mem.SetSettings(st); err != nil {
			return err
		}
	}
	rom := device.Firmware()
	p := st.Payee
	if p == "" {
		p = "(none: no offline payments)"
	}
	fmt.Fprintf(e.stdout, "payee: %s\n", p)
	if st.HolderTimeout == 0 {
		fmt.Fprintf(e.stdout, "holder timeout: %v (firmware default)\n", rom.HolderTimeout)
	} else {
		fmt.Fprintf(e.stdout, "holder timeout: %v\n", st.HolderTimeout)
	}
	fmt.Fprintf(e.stdout, "receipts: %s\n", strconv.FormatBool(!st.NoReceipts))
	return nil
}
