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
		subs:    []*command{dtmfTxCommand(), dtmfRxCommand()},
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
		return dtmfWriteWAV(e, *out, s)
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

// dtmfReadWAV reads the 8 kHz WAV file at path ("-": standard input).
func dtmfReadWAV(e *env, path string) ([]float64, error) {
	var r io.Reader = e.stdin
	name := "standard input"
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r, name = f, path
	}
	s, rate, err := audio.ReadWAV(r)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	if rate != audio.Rate {
		return nil, withHint(fmt.Errorf("%s is sampled at %d Hz, not %d Hz", name, rate, audio.Rate),
			fmt.Sprintf("convert it first, for example: sox %s -r %d out.wav", path, audio.Rate))
	}
	return s, nil
}

// dtmfWriteWAV writes s as an 8 kHz WAV file at path ("-": standard
// output), removing a half-written file on failure.
func dtmfWriteWAV(e *env, path string, s []float64) error {
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
