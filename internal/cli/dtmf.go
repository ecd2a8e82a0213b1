package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"cardlink/internal/audio"
	"cardlink/internal/link/dtmf"
)

func dtmfCommand() *command {
	return &command{
		name:    "dtmf",
		summary: "write telephone keypad tones to a WAV file, or read them from one",
		subs:    []*command{dtmfTxCommand(), dtmfRxCommand(), dtmfToneCommand(), dtmfProgressCommand()},
	}
}

const dtmfTxHelp = `
Writes DIGITS as DTMF tones (ITU-T Q.23, the tones of a telephone keypad)
to a WAV file: 16-bit mono PCM at 8000 Hz, the telephone line's format.
DIGITS are any of 0-9 * # A B C D (letters in either case; quote * and #
from the shell). Each digit is a tone of --tone milliseconds followed by
--pause milliseconds of silence.

--level is the low-group tone's level in dBFS (0 dBFS is a full-scale
sine); --twist makes the high-group tone that many dB stronger (negative:
weaker). Receivers to ITU-T Q.24 need tones and pauses of 40 ms or more,
and accept twists between -8 and +4 dB.

--out - writes the WAV file to standard output.

Example:

  cardlink dtmf tx --out pin.wav 1234#
  cardlink dtmf rx --in pin.wav        # prints 1234#`

func dtmfTxCommand() *command {
	c := &command{name: "tx", summary: "write DTMF digits as a WAV file"}
	c.run = func(e *env, args []string) error {
		fs := newFlags(e, "cardlink dtmf tx", "cardlink dtmf tx [--tone MS] [--pause MS] [--level DBFS] [--twist DB] --out FILE.wav DIGITS", dtmfTxHelp)
		tone := fs.Int("tone", int(dtmf.DefaultTone/time.Millisecond), "length of each `tone` in milliseconds")
		pause := fs.Int("pause", int(dtmf.DefaultPause/time.Millisecond), "silence after each tone in `milliseconds`")
		level := fs.Float64("level", dtmf.DefaultLevel, "level of the low-group tone in `dBFS`")
		twist := fs.Float64("twist", 0, "high-group level relative to the low group in `dB`")
		lead := fs.Int("lead", 0, "silence before the first digit in `milliseconds`")
		out := fs.String("out", "", "WAV `file` to write, - for standard output (required)")
		if err := parse(fs, args); err != nil {
			return err
		}
		if err := required(fs, "out"); err != nil {
			return err
		}
		if fs.NArg() != 1 {
			return withHint(usagef("dtmf tx: want one argument, the digits; got %d", fs.NArg()), "run 'cardlink dtmf tx -h' for help")
		}
		if *level == 0 {
			return usagef("dtmf tx: --level 0 dBFS would clip; the two tones together must stay below full scale")
		}
		if *lead < 0 || *lead > 10000 {
			return usagef("dtmf tx: --lead %d ms (want 0 to 10000)", *lead)
		}
		p := dtmf.Params{
			Tone:  time.Duration(*tone) * time.Millisecond,
			Pause: time.Duration(*pause) * time.Millisecond,
			Level: *level,
			Twist: *twist,
		}
		s, err := dtmf.Generate(fs.Arg(0), p)
		if err != nil {
			var hint string
			if errors.Is(err, dtmf.ErrDigit) {
				hint = "digits are 0-9 * # A B C D"
			} else {
				hint = "tones and pauses take 10 to 10000 ms; the level of both tones together must stay below 0 dBFS"
			}
			return withHint(usagef("dtmf tx: %v", strings.TrimPrefix(err.Error(), "dtmf: ")), hint)
		}
		s = append(make([]float64, *lead*audio.Rate/1000), s...)
		return writeWAV(e, *out, s)
	}
	return c
}

const dtmfRxHelp = `
Reads a WAV file and prints the DTMF digits it hears, alone on one line of
standard output (an empty line if there are none), so that scripts can use
them. The file must be at 8000 Hz (convert others first, for example with
'sox in.wav -r 8000 out.wav'); only its first channel is read.

The receiver follows ITU-T Q.24: frequencies within 1.5 % of nominal are
accepted and those 3.5 % or more off rejected; the high group may be up to
4 dB stronger than the low group and the low group up to 8 dB stronger
than the high; a tone must last 40 ms and a pause 40 ms (shorter breaks
are bridged); each tone reads as one digit, so a key pressed twice reads
twice. Speech, music and noise do not read as digits.

-v prints each digit with the time its tone starts to standard error.

--in - reads the WAV file from standard input.`

func dtmfRxCommand() *command {
	c := &command{name: "rx", summary: "print the DTMF digits in a WAV file"}
	c.run = func(e *env, args []string) error {
		fs := newFlags(e, "cardlink dtmf rx", "cardlink dtmf rx [-v] --in FILE.wav", dtmfRxHelp)
		in := fs.String("in", "", "WAV `file` to read, - for standard input (required)")
		verbose := fs.Bool("v", false, "print each digit and its time to standard error")
		if err := parse(fs, args); err != nil {
			return err
		}
		if err := required(fs, "in"); err != nil {
			return err
		}
		if fs.NArg() != 0 {
			return withHint(usagef("dtmf rx: unexpected argument %q", fs.Arg(0)), "run 'cardlink dtmf rx -h' for help")
		}
		s, err := dtmfReadWAV(e, *in)
		if err != nil {
			return err
		}
		ds := dtmf.Detect(s, dtmf.Config{})
		var b strings.Builder
		for _, d := range ds {
			b.WriteByte(d.Key)
			if *verbose {
				fmt.Fprintf(e.stderr, "%c at %.3f s\n", d.Key, d.At.Seconds())
			}
		}
		if *verbose {
			fmt.Fprintf(e.stderr, "%d digits in %.3f s of audio\n", len(ds), float64(len(s))/audio.Rate)
		}
		_, err = fmt.Fprintln(e.stdout, b.String())
		return err
	}
	return c
}

const dtmfToneHelp = `
Writes a call-progress or answer tone to a WAV file (16-bit mono PCM at
8000 Hz). KIND is one of:

  dial       dial tone: 350+440 Hz steady (--plan eu: 425 Hz)
  ringback   440+480 Hz, 2 s on, 4 s off (--plan eu: 425 Hz, 1 s on, 4 s off)
  busy       480+620 Hz, 0.5 s on, 0.5 s off (--plan eu: 425 Hz)
  answer     the ITU-T V.25 answer tone, 2100 Hz
  answer-pr  the answer tone with a phase reversal every 450 ms
  silence

--plan na is the North American precise tone plan, --plan eu the European
(CEPT) 425 Hz plan; the answer tone is the same in both.

Example:

  cardlink dtmf tone --seconds 8 --out ring.wav ringback
  cardlink dtmf progress --in ring.wav   # 0.000 s ringback`

var dtmfKinds = map[string]dtmf.Progress{
	"dial":      dtmf.Dial,
	"ringback":  dtmf.Ringback,
	"busy":      dtmf.Busy,
	"answer":    dtmf.Answer,
	"answer-pr": dtmf.AnswerPR,
	"silence":   dtmf.Silence,
}

func dtmfToneCommand() *command {
	c := &command{name: "tone", summary: "write a dial, ringback, busy or answer tone as a WAV file"}
	c.run = func(e *env, args []string) error {
		fs := newFlags(e, "cardlink dtmf tone", "cardlink dtmf tone [--plan na|eu] [--seconds S] [--level DBFS] --out FILE.wav KIND", dtmfToneHelp)
		plan := fs.String("plan", "na", "tone `plan`: na (North America) or eu (Europe, 425 Hz)")
		secs := fs.Float64("seconds", 6, "length in `seconds`")
		level := fs.Float64("level", -13, "level of each frequency in `dBFS`")
		out := fs.String("out", "", "WAV `file` to write, - for standard output (required)")
		if err := parse(fs, args); err != nil {
			return err
		}
		if err := required(fs, "out"); err != nil {
			return err
		}
		if fs.NArg() != 1 {
			return withHint(usagef("dtmf tone: want one argument, the kind of tone; got %d", fs.NArg()), "kinds are: answer, answer-pr, busy, dial, ringback, silence")
		}
		kind, ok := dtmfKinds[fs.Arg(0)]
		if !ok {
			return withHint(usagef("dtmf tone: unknown kind %q", fs.Arg(0)), "kinds are: answer, answer-pr, busy, dial, ringback, silence")
		}
		var p dtmf.Plan
		switch *plan {
		case "na":
			p = dtmf.NorthAmerica
		case "eu":
			p = dtmf.Europe
		default:
			return usagef("dtmf tone: unknown --plan %q (want na or eu)", *plan)
		}
		if !(*secs > 0 && *secs <= 3600) {
			return usagef("dtmf tone: --seconds %g (want more than 0, up to 3600)", *secs)
		}
		s, err := dtmf.GenerateProgress(kind, p, time.Duration(*secs*float64(time.Second)), *level)
		if err != nil {
			return usagef("dtmf tone: %v", strings.TrimPrefix(err.Error(), "dtmf: "))
		}
		return writeWAV(e, *out, s)
	}
	return c
}

const dtmfProgressHelp = `
Reads a WAV file (8000 Hz) and prints what the telephone line is doing as
it changes, one line per change on standard output: the time it started,
in seconds, and one of silence, dial tone, ringback, busy, answer tone,
answer tone with phase reversals, or other (voice, music, data). Both the
North American and the European tone plans are recognised.

A tone needs about a second to be told (busy and answer tones less);
silence is reported after 5 s of it once something else was heard, longer
than any ringback gap, and after 1 s at the start.`

func dtmfProgressCommand() *command {
	c := &command{name: "progress", summary: "print the call-progress tones heard in a WAV file"}
	c.run = func(e *env, args []string) error {
		fs := newFlags(e, "cardlink dtmf progress", "cardlink dtmf progress --in FILE.wav", dtmfProgressHelp)
		in := fs.String("in", "", "WAV `file` to read, - for standard input (required)")
		if err := parse(fs, args); err != nil {
			return err
		}
		if err := required(fs, "in"); err != nil {
			return err
		}
		if fs.NArg() != 0 {
			return withHint(usagef("dtmf progress: unexpected argument %q", fs.Arg(0)), "run 'cardlink dtmf progress -h' for help")
		}
		s, err := dtmfReadWAV(e, *in)
		if err != nil {
			return err
		}
		for _, ev := range dtmf.ClassifyProgress(s) {
			if _, err := fmt.Fprintf(e.stdout, "%.3f s %s\n", ev.At.Seconds(), ev.Progress); err != nil {
				return err
			}
		}
		return nil
	}
	return c
}

// dtmfReadWAV reads the 8 kHz WAV file at path ("-": standard input).
func dtmfReadWAV(e *env, path string) ([]float64, error) {
	s, rate, name, err := readWAV(e, path)
	if err != nil {
		return nil, err
	}
	if rate != audio.Rate {
		return nil, withHint(fmt.Errorf("%s is sampled at %d Hz, not %d Hz", name, rate, audio.Rate),
			fmt.Sprintf("convert it first, for example: sox %s -r %d out.wav", path, audio.Rate))
	}
	return s, nil
}

// readWAV reads the WAV file at path ("-": standard input), at any rate;
// name is how its errors call it.
func readWAV(e *env, path string) (s []float64, rate int, name string, err error) {
	var r io.Reader = e.stdin
	name = "standard input"
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, 0, path, err
		}
		defer f.Close()
		r, name = f, path
	}
	s, rate, err = audio.ReadWAV(r)
	if err != nil {
		return nil, 0, name, fmt.Errorf("reading %s: %w", name, err)
	}
	return s, rate, name, nil
}

// writeWAV writes s as an 8 kHz WAV file at path ("-": standard
// output), removing a half-written file on failure.
func writeWAV(e *env, path string, s []float64) error {
	var buf bytes.Buffer
	if err := audio.WriteWAV(&buf, audio.Rate, s); err != nil {
		return err
	}
	if path == "-" {
		_, err := e.stdout.Write(buf.Bytes())
		return err
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		os.Remove(path)
		return err
	}
	return nil
}
