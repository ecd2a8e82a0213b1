package cli

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"

	"cardlink/internal/cardfile"
	"cardlink/internal/device"
	"cardlink/internal/device/inline"
	"cardlink/internal/line"
	"cardlink/internal/link"
	"cardlink/internal/link/handover"
	"cardlink/internal/link/modem"
	"cardlink/internal/server"
	"cardlink/internal/server/ivr"
	"cardlink/internal/store"
	"cardlink/internal/wallet"
)

// ivrFlags are the flags of 'cardlink server' that make it answer
// telephone calls with the IVR (package ivr): off unless --line is given.
type ivrFlags struct {
	addr, number, mode, voice *string
	lines                     *int
	speed                     *float64
}

const ivrHelp = `
With --line ADDR the server also answers telephone calls: it registers
--line-number (default 5550100) at the line switch at ADDR ('cardlink line
serve'), --line-lines calls at once, and speaks a menu (espeak-ng when
installed, else tone patterns; --line-voice): 1 pays a purchase by its
reference code, 2 signs in. The holder's in-line device ('cardlink device
inline') then takes the line, runs the payment or sign-in with the card
over a modem (--line-mode, default 1200: Bell 202), and the IVR announces
the outcome. --line-speed must match the switch's --speed. Each call is
logged ("ivr call": caller, choices, outcome, line time).`

func addIVRFlags(fs *flag.FlagSet) *ivrFlags {
	return &ivrFlags{
		addr:   fs.String("line", "", "line switch address: answer telephone calls there with the IVR"),
		number: fs.String("line-number", "5550100", "the IVR's telephone number"),
		lines:  fs.Int("line-lines", 4, "calls the IVR answers at once"),
		mode:   fs.String("line-mode", "1200", "modem for the device's session: 1200 (Bell 202), v23, 300, v21"),
		voice:  fs.String("line-voice", "auto", "prompts: auto (espeak-ng if installed), espeak, tones"),
		speed:  fs.Float64("line-speed", 1, "the switch's --speed (line time per real time), for the modem's timers"),
	}
}

// modems returns the answering and originating modems for mode at speed;
// cmd and the flags' names make the usage errors.
func modems(cmd, modeFlag, speedFlag, mode string, speed float64) (ivr.Modem, inline.Modem, error) {
	m, err := modem.ParseMode(mode)
	if err != nil {
		return nil, nil, usagef("%s: --%s: %v", cmd, modeFlag, err)
	}
	if !(speed > 0 && speed <= 1000) {
		return nil, nil, usagef("%s: --%s %v: want a number in (0, 1000], the switch's --speed", cmd, speedFlag, speed)
	}
	opts := &modem.Options{Speed: speed}
	answer := ivr.AnswerModem(m, opts)
	dial := func(_ context.Context, call *line.Call) (link.Link, error) { return modem.Dial(call, m, opts) }
	return answer, dial, nil
}

// start registers the IVR's number and answers calls until ctx ends; the
// returned function waits for the calls to end. With no --line it does
// nothing.
func (f *ivrFlags) start(ctx context.Context, e *env, srv *server.Server, st store.Store, log *slog.Logger) (func(), error) {
	if *f.addr == "" {
		return func() {}, nil
	}
	answer, _, err := modems("server", "line-mode", "line-speed", *f.mode, *f.speed)
	if err != nil {
		return nil, err
	}
	var v ivr.Voice
	switch *f.voice {
	case "auto":
		v = ivr.DefaultVoice()
	case "tones":
		v = ivr.Tones{}
	case "espeak":
		if v, err = ivr.NewSpeech("", 0); err != nil {
			return nil, withHint(err, "install espeak-ng and sox, or use --line-voice tones")
		}
	default:
		return nil, usagef("server: --line-voice %q: want auto, espeak or tones", *f.voice)
	}
	ms, ok := st.(store.Merchants)
	if !ok {
		return nil, errors.New("server: the store keeps no purchases; the IVR needs them")
	}
	s, err := ivr.New(ivr.Config{Modem: answer, Devices: srv, Purchases: ms, Voice: v, Logger: log})
	if err != nil {
		return nil, err
	}
	l, err := line.Listen(ctx, *f.addr, *f.number, &line.ListenOptions{Lines: *f.lines, Window: ivr.Window})
	if err != nil {
		return nil, withHint(fmt.Errorf("registering the IVR's number: %w", err), "is 'cardlink line serve' running at "+*f.addr+"?")
	}
	fmt.Fprintf(e.stdout, "IVR answering %s at %s\n", *f.number, *f.addr)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer l.Close()
		if err := s.Serve(ctx, l, nil); err != nil {
			log.Error("IVR stopped", "err", err)
		}
	}()
	return func() { <-done }, nil
}

const deviceInlineHelp = `
Runs an in-line card device on the telephone line ('cardlink line serve'
at --line): it registers --number, which the holder's handset calls (e.g.
'cardlink line call --to NUMBER'), and for each such call dials the IVR
(--to, 'cardlink server --line ...') and passes the voice both ways. When
the IVR asks (after the holder chose "pay" or "sign in" in its menu), or
the holder types a command on standard input —

  pay CODE     pay the purchase with this reference code
  sign-in      sign in

— the device takes the line (the handset is muted), runs the payment or
the sign-in with the card in FILE over a modem (--mode, --speed as the
server's --line-mode and --line-speed), and hands the line back. Each
session's outcome is printed. --pin, --online-pin... verify the holder as
for 'cardlink device buy'. It runs until interrupted, or until --calls
calls have ended.

example:
  cardlink device inline --card alice.card --device dev --pin 1234 \
      --line 127.0.0.1:7440 --number 200 --to 5550100`

func deviceInlineCommand() *command {
	c := &command{name: "inline", summary: "sit on a telephone line and pay or sign in over a modem"}
	c.run = func(e *env, args []string) error {
		fs := newFlags(e, "cardlink device inline",
			"cardlink device inline --card FILE --device DEVDIR --line ADDR --number N --to IVR [--pin PIN | ...] [--mode M] [--speed S] [--calls N]",
			deviceInlineHelp)
		hf := addHolderFlags(fs)
		addr := fs.String("line", "", "line switch address (required)")
		number := fs.String("number", "", "this device's number, which the handset calls (required)")
		to := fs.String("to", "", "the IVR's number (required)")
		mode := fs.String("mode", "1200", "modem: 1200 (Bell 202), v23, 300, v21")
		speed := fs.Float64("speed", 1, "the switch's --speed, for the modem's timers")
		calls := fs.Int("calls", 0, "end after this many calls (0: run until interrupted)")
		verbose := fs.Bool("v", false, "log the device's sessions in detail")
		ready := fs.String("ready-file", "", "file to write the number to once registered")
		if err := parse(fs, args); err != nil {
			return err
		}
		if err := required(fs, "card", "device", "line", "number", "to"); err != nil {
			return err
		}
		if err := noArgs(fs); err != nil {
			return err
		}
		auth, err := hf.options("device inline")
		if err != nil {
			return err
		}
		_, dial, err := modems("device inline", "mode", "speed", *mode, *speed)
		if err != nil {
			return err
		}
		id, card, closeAll, err := openInline(e, hf)
		if err != nil {
			return err
		}
		defer closeAll()
		level := slog.LevelWarn
		if *verbose {
			level = slog.LevelDebug
		}
		log := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level}))
		dev, err := inline.New(inline.Config{Identity: id, Card: card, Modem: dial, Auth: auth, Logger: log,
			OnSession: func(s inline.Session) { printSession(e, s) }})
		if err != nil {
			return err
		}
		ctx, cancel := context.WithCancel(e.ctx)
		defer cancel()
		l, err := line.Listen(ctx, *addr, *number, &line.ListenOptions{Window: inline.Window})
		if err != nil {
			return withHint(fmt.Errorf("registering the device's number: %w", err), "is 'cardlink line serve' running at "+*addr+"?")
		}
		defer l.Close()
		fmt.Fprintf(e.stdout, "device on %s, calling %s\n", *number, *to)
		if *ready != "" {
			if err := writeFileAtomic(*ready, []byte(*number+"\n")); err != nil {
				return err
			}
		}
		go readHolderCommands(ctx, e, dev)
		for n := 0; *calls == 0 || n < *calls; n++ {
			hs, err := l.Accept(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("answering the handset: %w", err)
			}
			phone, err := line.Dial(ctx, *addr, *to, &line.Options{From: hs.Remote(), Window: inline.Window})
			if err != nil {
				hs.Hangup()
				fmt.Fprintf(e.stdout, "call to %s failed: %v\n", *to, err)
				continue
			}
			fmt.Fprintf(e.stdout, "call %d: handset %s through to %s\n", n+1, hs.Remote(), *to)
			if err := dev.Run(ctx, hs, phone); err != nil {
				fmt.Fprintf(e.stdout, "call %d ended: %v\n", n+1, err)
			} else {
				fmt.Fprintf(e.stdout, "call %d ended\n", n+1)
			}
		}
		return nil
	}
	return c
}

// openInline opens the device memory and the card.
func openInline(e *env, hf *holderFlags) (device.Identity, *wallet.Client, func(), error) {
	var closes []func() error
	closeAll := func() {
		for i := len(closes) - 1; i >= 0; i-- {
			closes[i]()
		}
	}
	fail := func(err error) (device.Identity, *wallet.Client, func(), error) {
		closeAll()
		return device.Identity{}, nil, nil, err
	}
	mem, err := device.OpenMemory(filepath.Join(*hf.dir, deviceMemoryFile))
	if err != nil {
		return fail(withHint(err, "create a device with 'cardlink device provision --dir "+*hf.dir+" ...'"))
	}
	closes = append(closes, mem.Close)
	id, err := mem.Identity()
	if err != nil {
		return fail(err)
	}
	f, err := cardfile.Open(*hf.card)
	if err != nil {
		return fail(err)
	}
	closes = append(closes, f.Close)
	conn, err := f.Connect(e.ctx)
	if err != nil {
		return fail(err)
	}
	closes = append(closes, conn.Close)
	card, err := wallet.Select(e.ctx, conn)
	if err != nil {
		return fail(err)
	}
	return id, card, closeAll, nil
}

var printMu sync.Mutex

func printSession(e *env, s inline.Session) {
	printMu.Lock()
	defer printMu.Unlock()
	switch {
	case s.Buy != nil && s.Err == nil:
		fmt.Fprintf(e.stdout, "pay %s: %v (code %d)\n", s.Reference, s.Buy.Code, s.Code)
	case s.Auth != nil && s.Err == nil:
		fmt.Fprintf(e.stdout, "sign-in: %v (code %d)\n", s.Auth.Code, s.Code)
	default:
		fmt.Fprintf(e.stdout, "%s: not finished: %v\n", s.Op, s.Err)
	}
}

// readHolderCommands reads "pay CODE" and "sign-in" lines from standard
// input and starts them on the device.
func readHolderCommands(ctx context.Context, e *env, dev *inline.Device) {
	sc := bufio.NewScanner(e.stdin)
	for sc.Scan() && ctx.Err() == nil {
		f := strings.Fields(sc.Text())
		var err error
		switch {
		case len(f) == 0:
			continue
		case f[0] == "pay" && len(f) >= 2:
			err = dev.Start(handover.OpPay, strings.Join(f[1:], ""))
		case f[0] == "sign-in" && len(f) == 1:
			err = dev.Start(handover.OpSignIn, "")
		default:
			err = errors.New("want \"pay CODE\" or \"sign-in\"")
		}
		printMu.Lock()
		if err != nil {
			fmt.Fprintf(e.stdout, "%s: %v\n", sc.Text(), err)
		} else {
			fmt.Fprintf(e.stdout, "%s: asked; the device takes the line\n", f[0])
		}
		printMu.Unlock()
	}
}
