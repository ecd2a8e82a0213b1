package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"sync"
	"time"

	"cardlink/internal/audio"
	"cardlink/internal/audio/impair"
	"cardlink/internal/line"
)

func lineCommand() *command {
	return &command{
		name:    "line",
		summary: "simulate a telephone line: a switch, callers and answerers",
		subs:    []*command{lineServeCommand(), lineCallCommand(), lineAnswerCommand()},
	}
}

const lineImpairHelp = `

Impairments (docs/telephone-line.md): --band-limit filters to the
telephone band, 300-3400 Hz; --snr DB adds white noise in that band so that
a signal sent at --signal-level dBFS arrives DB above the noise (after
--attenuation); --noise DBFS sets the noise level directly instead;
--attenuation DB weakens the signal; --drift-ppm PPM makes the receiver's
sample clock run PPM parts per million fast (more samples arrive than were
sent) or slow; --burst-every, --burst-length and --burst-level add bursts of
noise. Levels are in dBFS: a full-scale sine is 0 dBFS.`

// impairFlags are the flags that describe one direction of a line.
type impairFlags struct {
	bandLimit   bool
	snr, signal float64
	noise       float64
	attenuation float64
	drift       float64
	burstEvery  time.Duration
	burstLength time.Duration
	burstLevel  float64
	seed        uint64
}

var impairFlagNames = []string{"band-limit", "snr", "signal-level", "noise", "attenuation", "drift-ppm",
	"burst-every", "burst-length", "burst-level", "seed"}

func addImpairFlags(fs *flag.FlagSet) *impairFlags {
	f := &impairFlags{}
	fs.BoolVar(&f.bandLimit, "band-limit", true, "filter to the telephone band, 300-3400 Hz")
	fs.Float64Var(&f.snr, "snr", 0, "signal-to-noise ratio in dB at the receiver for a signal sent at --signal-level (0: no noise)")
	fs.Float64Var(&f.signal, "signal-level", -10, "the level in dBFS that --snr refers to")
	fs.Float64Var(&f.noise, "noise", 0, "in-band noise level in dBFS, instead of --snr (0: no noise)")
	fs.Float64Var(&f.attenuation, "attenuation", 0, "loss in dB")
	fs.Float64Var(&f.drift, "drift-ppm", 0, "receiver's sample clock against the sender's, in parts per million")
	fs.DurationVar(&f.burstEvery, "burst-every", 0, "a burst of noise every so much line time (0: none)")
	fs.DurationVar(&f.burstLength, "burst-length", 100*time.Millisecond, "length of each burst")
	fs.Float64Var(&f.burstLevel, "burst-level", -10, "in-band level of the bursts in dBFS")
	fs.Uint64Var(&f.seed, "seed", 0, "seed of the noise (0: one per call and direction)")
	return f
}

// config turns the flags into an impair.Config, or a usage error.
func (f *impairFlags) config(cmd string) (impair.Config, error) {
	c := impair.Config{
		BandLimit:     f.bandLimit,
		NoiseDBFS:     f.noise,
		AttenuationDB: f.attenuation,
		DriftPPM:      f.drift,
		Seed:          f.seed,
	}
	if f.snr != 0 {
		if f.noise != 0 {
			return c, usagef("%s: --snr and --noise both set the noise; give one", cmd)
		}
		c.NoiseDBFS = line.NoiseForSNR(f.snr, f.signal, f.attenuation)
		if c.NoiseDBFS == 0 {
			c.NoiseDBFS = -0.01
		}
	}
	if f.burstEvery > 0 {
		c.BurstEvery, c.BurstLength, c.BurstDBFS = f.burstEvery, f.burstLength, f.burstLevel
	}
	if _, err := impair.New(c); err != nil {
		return c, usagef("%s: %v", cmd, err)
	}
	return c, nil
}

const lineServeHelp = `
Runs a telephone switch on a loopback TCP port: answering parties register
numbers ('cardlink line answer', the IVR server), callers dial them
('cardlink line call', the in-line device), and the switch carries each
call's audio both ways as 8 kHz 16-bit PCM on its own clock, 160 samples
every 20 ms of line time, impaired as configured. A party that sends
nothing sends silence, so the other hears the line's noise. The flags set
the impairments of every call; a caller may ask for its own.

--speed runs the line's clock faster than real time (--speed 4: a 10 s call
takes 2.5 s), for tests. --record DIR writes two WAV files per call, what
each party heard: call-ID-caller.wav and call-ID-callee.wav. It runs until
interrupted (SIGINT or SIGTERM), then ends every call and stops. A listen
address with port 0 takes a free port; the address is printed and written
to --addr-file.` + lineImpairHelp

func lineServeCommand() *command {
	c := &command{name: "serve", summary: "run the telephone switch"}
	c.run = func(e *env, args []string) error {
		fs := newFlags(e, "cardlink line serve", "cardlink line serve [--listen ADDR] [--addr-file FILE] [impairment flags] [flags]", lineServeHelp)
		listen := fs.String("listen", "127.0.0.1:7440", "address to listen on")
		addrFile := fs.String("addr-file", "", "file to write the listening address to, once listening")
		speed := fs.Float64("speed", 1, "line time per real time")
		window := fs.Int("window", 2000, "samples a party may write ahead of the line, unless it asks for another window")
		ring := fs.Duration("ring-timeout", 30*time.Second, "line time a call may ring unanswered")
		record := fs.String("record", "", "directory for WAV recordings of every call")
		verbose := fs.Bool("v", false, "log every call")
		imp := addImpairFlags(fs)
		if err := parse(fs, args); err != nil {
			return err
		}
		if err := noArgs(fs); err != nil {
			return err
		}
		lc, err := imp.config("line serve")
		if err != nil {
			return err
		}
		if *speed <= 0 || *speed > 1000 {
			return usagef("line serve: --speed %v: want more than 0, at most 1000", *speed)
		}
		if *window < 1 || *window > 16000 || *ring <= 0 {
			return usagef("line serve: --window %d: want 1 to 16000; --ring-timeout: want more than 0", *window)
		}
		if *record != "" {
			if err := os.MkdirAll(*record, 0o755); err != nil {
				return fmt.Errorf("creating recording directory: %w", err)
			}
		}
		level := slog.LevelWarn
		if *verbose {
			level = slog.LevelInfo
		}
		sw, err := line.NewSwitch(line.Config{
			Line: lc, Speed: *speed, Window: *window, RingTimeout: *ring, RecordDir: *record,
			Log: slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level})),
		})
		if err != nil {
			return usagef("line serve: %v", err)
		}
		ln, err := net.Listen("tcp", *listen)
		if err != nil {
			return fmt.Errorf("listening: %w", err)
		}
		fmt.Fprintf(e.stdout, "switch listening on %s\n", ln.Addr())
		if *addrFile != "" {
			if err := writeFileAtomic(*addrFile, fmt.Appendf(nil, "%s\n", ln.Addr())); err != nil {
				ln.Close()
				return err
			}
		}
		if err := sw.Serve(e.ctx, ln); err != nil {
			return err
		}
		st := sw.Stats()
		fmt.Fprintf(e.stdout, "switch stopped after %d calls\n", st.Connected)
		return nil
	}
	return c
}

// partyFlags are what the call and answer commands send and record.
type partyFlags struct {
	server     *string
	play       *string
	tone       *float64
	level      *float64
	toneLength *time.Duration
	record     *string
	duration   *time.Duration
}

func addPartyFlags(fs *flag.FlagSet) *partyFlags {
	return &partyFlags{
		server:     fs.String("switch", "127.0.0.1:7440", "address of the switch ('cardlink line serve')"),
		play:       fs.String("play", "", "WAV file (8 kHz) to send once connected"),
		tone:       fs.Float64("tone", 0, "send a sine tone of so many Hz instead of a file"),
		level:      fs.Float64("level", -10, "level of --tone in dBFS"),
		toneLength: fs.Duration("tone-length", 2*time.Second, "length of --tone"),
		record:     fs.String("record", "", "WAV file to write what this party hears"),
		duration:   fs.Duration("duration", 0, "hang up after so much line time (default: once what is sent has gone out, or when the other party hangs up)"),
	}
}

// source loads what the party sends: nil for nothing.
func (f *partyFlags) source(cmd string) ([]float64, error) {
	if *f.play != "" && *f.tone != 0 {
		return nil, usagef("%s: give --play or --tone, not both", cmd)
	}
	if *f.duration < 0 {
		return nil, usagef("%s: --duration %v is negative", cmd, *f.duration)
	}
	if *f.tone != 0 {
		if *f.tone < 0 || *f.tone >= audio.Rate/2 || *f.level > 0 || *f.toneLength <= 0 || *f.toneLength > time.Hour {
			return nil, usagef("%s: --tone %v Hz at %v dBFS for %v: want 0 to 4000 Hz, at most 0 dBFS, up to 1h", cmd, *f.tone, *f.level, *f.toneLength)
		}
		n := int(f.toneLength.Seconds() * audio.Rate)
		a := math.Sqrt(2 * impair.Power(*f.level))
		s := make([]float64, n)
		for i := range s {
			s[i] = a * math.Sin(2*math.Pi**f.tone*float64(i)/audio.Rate)
		}
		return s, nil
	}
	if *f.play == "" {
		return nil, nil
	}
	fh, err := os.Open(*f.play)
	if err != nil {
		return nil, fmt.Errorf("opening --play file: %w", err)
	}
	defer fh.Close()
	s, rate, err := audio.ReadWAV(fh)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", *f.play, err)
	}
	if rate != audio.Rate {
		return nil, withHint(fmt.Errorf("%s is sampled at %d Hz, the line at %d Hz", *f.play, rate, audio.Rate),
			"convert it, e.g. 'sox IN.wav -r 8000 -c 1 OUT.wav'")
	}
	return s, nil
}

// talk sends src on the call and records what arrives (the first hour),
// until the call ends, the duration of line time passes, or (with no
// duration) src has gone out and 200 ms more. It returns what arrived and
// why the call ended ("" if this party hung up).
func talk(ctx context.Context, call *line.Call, src []float64, duration time.Duration, untilHangup bool) ([]float64, string) {
	var wg sync.WaitGroup
	sent := make(chan struct{})
	if src != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := call.Write(src); err == nil {
				close(sent)
			}
		}()
	}
	stop := context.AfterFunc(ctx, func() { call.Hangup() })
	defer stop()
	limit := int64(-1)
	if duration > 0 {
		limit = int64(duration.Seconds() * audio.Rate)
	}
	var got []float64
	buf := make([]float64, 1024)
	tail := int64(-1)
	var heard int64 // samples read
	var why string
	for {
		n, err := call.Read(buf)
		if len(got) < audio.MaxSamples { // keep at most an hour
			got = append(got, buf[:min(n, audio.MaxSamples-len(got))]...)
		}
		if err != nil {
			if !errors.Is(err, line.ErrClosed) {
				why = err.Error()
			}
			break
		}
		heard += int64(n)
		if limit >= 0 && heard >= limit {
			got = got[:min(int64(len(got)), limit)]
			break
		}
		if limit < 0 && src != nil && !untilHangup && tail < 0 {
			select {
			case <-sent:
				if call.Pending() == 0 {
					tail = heard + audio.Rate/5
				}
			default:
			}
		}
		if tail >= 0 && heard >= tail {
			break
		}
	}
	call.Hangup()
	wg.Wait()
	return got, why
}

// report prints how much arrived and its level, and writes the recording.
func report(e *env, what string, got []float64, path string) error {
	loudest := math.Inf(-1)
	const win = audio.Rate / 5
	for i := 0; i+win <= len(got); i += win {
		loudest = max(loudest, impair.DBFS(impair.BandPower(got[i:i+win])))
	}
	level := "silent"
	if !math.IsInf(loudest, -1) {
		level = fmt.Sprintf("%.1f dBFS", loudest)
	}
	fmt.Fprintf(e.stdout, "%s: heard %.2f s, loudest 200 ms in band %s\n", what, float64(len(got))/audio.Rate, level)
	if path == "" {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("writing recording: %w", err)
	}
	if err := audio.WriteWAV(f, audio.Rate, got); err != nil {
		f.Close()
		return fmt.Errorf("writing recording: %w", err)
	}
	return f.Close()
}

const lineCallHelp = `
Calls NUMBER through the switch at --switch, sends --play FILE.wav (8 kHz,
mono or the first channel) or a --tone once answered, records what it hears
into --record FILE.wav, and hangs up once what it sent has gone out (plus
200 ms), after --duration of line time, or when the other party hangs up.
It prints the call's progress and the level of what it heard.

Without impairment flags the call takes the switch's; with any, both
directions of this call use the flags (with their defaults for the rest).` + lineImpairHelp

func lineCallCommand() *command {
	c := &command{name: "call", summary: "place a call: send audio, record what comes back"}
	c.run = func(e *env, args []string) error {
		fs := newFlags(e, "cardlink line call", "cardlink line call --to NUMBER [--switch ADDR] [--play FILE.wav | --tone HZ] [--record FILE.wav] [flags]", lineCallHelp)
		to := fs.String("to", "", "number to call (required)")
		from := fs.String("from", "", "this party's number, shown to the callee")
		window := fs.Int("window", 0, "samples this party may write ahead of the line (0: the switch's default)")
		pf := addPartyFlags(fs)
		imp := addImpairFlags(fs)
		if err := parse(fs, args); err != nil {
			return err
		}
		if err := required(fs, "to"); err != nil {
			return err
		}
		if err := noArgs(fs); err != nil {
			return err
		}
		src, err := pf.source("line call")
		if err != nil {
			return err
		}
		opts := &line.Options{From: *from, Window: *window}
		set := false
		fs.Visit(func(f *flag.Flag) {
			for _, n := range impairFlagNames {
				set = set || f.Name == n
			}
		})
		if set {
			lc, err := imp.config("line call")
			if err != nil {
				return err
			}
			back := lc
			opts.Forward, opts.Back = &lc, &back
		}
		call, err := line.Dial(e.ctx, *pf.server, *to, opts)
		if errors.Is(err, line.ErrNumber) {
			return usagef("line call: %v", err)
		}
		if err != nil {
			if errors.Is(err, line.ErrBusy) || errors.Is(err, line.ErrNoSuchNumber) || errors.Is(err, line.ErrNoAnswer) {
				return err
			}
			return withHint(err, "is 'cardlink line serve' running at "+*pf.server+"?")
		}
		fmt.Fprintf(e.stdout, "call %d to %s connected\n", call.ID(), *to)
		got, why := talk(e.ctx, call, src, *pf.duration, false)
		if why == "" {
			why = "hung up"
		}
		fmt.Fprintf(e.stdout, "call %d ended: %s\n", call.ID(), why)
		return report(e, fmt.Sprintf("call %d", call.ID()), got, *pf.record)
	}
	return c
}

const lineAnswerHelp = `
Registers NUMBER at the switch at --switch and answers --calls calls (0: until
interrupted), --lines of them at once. For each call it sends --play
FILE.wav or a --tone, records what it hears into --record FILE.wav (with
--calls other than 1, FILE-ID.wav for call ID), and hangs up after
--duration of line time, or once what it sent has gone out, or when the
caller hangs up (with --wait-hangup, only then). Once registered it prints
"registered NUMBER" and writes --ready-file, for scripts.`

func lineAnswerCommand() *command {
	c := &command{name: "answer", summary: "answer calls to a number: send audio, record what comes"}
	c.run = func(e *env, args []string) error {
		fs := newFlags(e, "cardlink line answer", "cardlink line answer --number NUMBER [--switch ADDR] [--play FILE.wav | --tone HZ] [--record FILE.wav] [flags]", lineAnswerHelp)
		number := fs.String("number", "", "number to register (required)")
		calls := fs.Int("calls", 1, "calls to answer before stopping (0: until interrupted)")
		lines := fs.Int("lines", 1, "calls taken at once; more callers hear busy")
		ready := fs.String("ready-file", "", "file to write once registered")
		waitHangup := fs.Bool("wait-hangup", false, "keep each call until the caller hangs up (or --duration)")
		window := fs.Int("window", 0, "samples this party may write ahead of the line (0: the switch's default)")
		pf := addPartyFlags(fs)
		if err := parse(fs, args); err != nil {
			return err
		}
		if err := required(fs, "number"); err != nil {
			return err
		}
		if err := noArgs(fs); err != nil {
			return err
		}
		if *calls < 0 || *lines < 1 || *lines > 1024 {
			return usagef("line answer: --calls %d, --lines %d: want 0 or more calls on 1 to 1024 lines", *calls, *lines)
		}
		src, err := pf.source("line answer")
		if err != nil {
			return err
		}
		l, err := line.Listen(e.ctx, *pf.server, *number, &line.ListenOptions{Lines: *lines, Window: *window})
		if errors.Is(err, line.ErrNumber) {
			return usagef("line answer: %v", err)
		}
		if err != nil {
			return withHint(err, "is 'cardlink line serve' running at "+*pf.server+"?")
		}
		defer l.Close()
		fmt.Fprintf(e.stdout, "registered %s\n", *number)
		if *ready != "" {
			if err := writeFileAtomic(*ready, []byte(*number+"\n")); err != nil {
				return err
			}
		}
		var (
			wg    sync.WaitGroup
			mu    sync.Mutex
			first error
		)
		for n := 0; *calls == 0 || n < *calls; n++ {
			call, err := l.Accept(e.ctx)
			if err != nil {
				if e.ctx.Err() != nil {
					break
				}
				wg.Wait()
				return fmt.Errorf("answering: %w", err)
			}
			from := call.Remote()
			if from == "" {
				from = "an unknown number"
			}
			mu.Lock()
			fmt.Fprintf(e.stdout, "call %d from %s answered\n", call.ID(), from)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				got, why := talk(e.ctx, call, src, *pf.duration, *waitHangup)
				if why == "" {
					why = "hung up"
				}
				path := *pf.record
				if path != "" && *calls != 1 {
					path = fmt.Sprintf("%s-%d.wav", trimWAV(path), call.ID())
				}
				mu.Lock()
				defer mu.Unlock()
				fmt.Fprintf(e.stdout, "call %d ended: %s\n", call.ID(), why)
				if err := report(e, fmt.Sprintf("call %d", call.ID()), got, path); err != nil && first == nil {
					first = err
				}
			}()
			if *lines == 1 {
				wg.Wait()
			}
		}
		wg.Wait()
		return first
	}
	return c
}

func trimWAV(path string) string {
	if len(path) > 4 && path[len(path)-4:] == ".wav" {
		return path[:len(path)-4]
	}
	return path
}
