package cli

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strings"

	"cardlink/internal/audio"
	"cardlink/internal/link/fsk"
)

func modemCommand() *command {
	return &command{
		name:    "modem",
		summary: "send and receive bytes as telephone-line FSK modem tones in WAV files",
		subs:    []*command{modemTxCommand(), modemRxCommand()},
	}
}

// maxModemInput bounds what 'modem tx' reads: an hour of V.23 at 1200
// bit/s is 540,000 bytes.
const maxModemInput = 1 << 20

const modemModes = `
Modes (--mode), with their tones (mark = 1 and idle, space = 0):

  1200   Bell 202, 1200 bit/s, mark 1200 Hz, space 2200 Hz (minimodem's 1200)
  v23    ITU-T V.23 forward channel, 1200 bit/s, mark 1300 Hz, space 2100 Hz;
         with --v23-back its 75 bit/s back channel, mark 390 Hz, space 450 Hz
  300    Bell 103, 300 bit/s, the calling (originating) side: mark 1270 Hz,
         space 1070 Hz (minimodem's 300); with --answer the answering side:
         mark 2225 Hz, space 2025 Hz
  v21    ITU-T V.21, 300 bit/s, channel 1 (calling side): mark 980 Hz, space
         1180 Hz; with --answer channel 2: mark 1650 Hz, space 1850 Hz

The names v23-back, 300-answer and v21-answer are accepted as modes too.
Characters are asynchronous: a start bit, 8 data bits least significant
first, a stop bit (minimodem's default framing).`

// modemFlags adds --mode, --answer and --v23-back to fs and returns a
// function that resolves them after parsing.
func modemFlags(fs *flag.FlagSet) func() (fsk.Mode, error) {
	name := fs.String("mode", "", "1200 (Bell 202), v23, 300 (Bell 103) or v21 (required)")
	answer := fs.Bool("answer", false, "the answering side's channel of a 300 bit/s mode (300, v21)")
	back := fs.Bool("v23-back", false, "V.23's 75 bit/s back channel (with --mode v23)")
	return func() (fsk.Mode, error) {
		n := strings.ToLower(*name)
		switch {
		case *answer && *back:
			return fsk.Mode{}, usagef("--answer and --v23-back do not go together")
		case *answer && (n == "300" || n == "v21"):
			n += "-answer"
		case *answer:
			return fsk.Mode{}, usagef("--answer needs --mode 300 or v21, not %q", *name)
		case *back && n == "v23":
			n = "v23-back"
		case *back:
			return fsk.Mode{}, usagef("--v23-back needs --mode v23, not %q", *name)
		}
		m, err := fsk.ParseMode(n)
		if err != nil {
			return fsk.Mode{}, withHint(usagef("unknown modem mode %q", *name), "modes are 1200, v23, 300 and v21; run 'cardlink modem tx -h'")
		}
		return m, nil
	}
}

const modemTxHelp = `
Reads bytes from standard input (or --in FILE) and writes them as modem
tones to a WAV file (16-bit PCM, mono, 8000 samples per second): a lead-in
of idle mark tone (32 bit periods) for the receiver to find the carrier,
the characters back to back, and 8 bit periods of mark to end. The tones
change phase continuously. --out - writes the WAV file to standard output.
` + modemModes + `

Examples:
  echo hello | cardlink modem tx --mode 1200 --out hello.wav
  cardlink modem tx --mode v21 --answer --in data.bin --out reply.wav
  minimodem --rx -f hello.wav 1200    # decodes it`

func modemTxCommand() *command {
	c := &command{name: "tx", summary: "modulate bytes from standard input into a WAV file"}
	c.run = func(e *env, args []string) error {
		fs := newFlags(e, "cardlink modem tx",
			"cardlink modem tx --mode 1200|v23|300|v21 [--answer] [--v23-back] --out FILE.wav", modemTxHelp)
		mode := modemFlags(fs)
		out := fs.String("out", "", "WAV file to write, or - for standard output (required)")
		in := fs.String("in", "-", "file of bytes to send, or - for standard input")
		level := fs.Float64("level", -6, "peak level of the tones in dBFS (0 is full scale)")
		if err := parse(fs, args); err != nil {
			return err
		}
		if err := required(fs, "mode", "out"); err != nil {
			return err
		}
		m, err := mode()
		if err != nil {
			return err
		}
		if !(*level <= 0 && *level >= -60) {
			return usagef("modem tx: --level %v dBFS is not between -60 and 0", *level)
		}
		data, err := readModemInput(e, *in)
		if err != nil {
			return err
		}
		mod, err := fsk.NewModulator(m, audio.Rate, math.Pow(10, *level/20))
		if err != nil {
			return err
		}
		s := mod.AppendIdle(nil, fsk.LeadInBits)
		s = mod.AppendBytes(s, data)
		s = mod.AppendIdle(s, fsk.TrailerBits)
		if err := writeWAV(e, *out, s); err != nil {
			return err
		}
		fmt.Fprintf(e.stderr, "modem tx: %s: %d bytes, %.2f s\n", m, len(data), float64(len(s))/audio.Rate)
		return nil
	}
	return c
}

func readModemInput(e *env, name string) ([]byte, error) {
	var r io.Reader = e.stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, maxModemInput+1))
	if err != nil {
		return nil, fmt.Errorf("reading the bytes to send: %w", err)
	}
	if len(data) > maxModemInput {
		return nil, fmt.Errorf("more than %d bytes to send", maxModemInput)
	}
	return data, nil
}

const modemRxHelp = `
Reads modem tones from a WAV file (--in; - for standard input) and writes
the bytes received, and nothing else, to standard output. What the modem
saw goes to standard error: each time the carrier came up and went down,
the number of bytes and of framing errors (start bits without a stop bit,
whose characters are dropped).

Any sample rate and sample format of WAV works (minimodem writes 48000
samples per second unless told -R 8000); of several channels the first is
used. The receiver finds the carrier by itself, follows changes of level
and a sender's bit rate up to 6 % off, and decodes each character at the
timing that fits it best.

Exit status: 0 if a carrier was found (even if no byte came), 1 if there
was no carrier at all or the file could not be read, 2 for a usage error.
` + modemModes + `

Examples:
  cardlink modem rx --mode 1200 --in hello.wav
  minimodem --tx -f m.wav -M 1300 -S 2100 1200 <<<hi && cardlink modem rx --mode v23 --in m.wav`

func modemRxCommand() *command {
	c := &command{name: "rx", summary: "demodulate a WAV file to bytes on standard output"}
	c.run = func(e *env, args []string) error {
		fs := newFlags(e, "cardlink modem rx",
			"cardlink modem rx --mode 1200|v23|300|v21 [--answer] [--v23-back] --in FILE.wav", modemRxHelp)
		mode := modemFlags(fs)
		in := fs.String("in", "", "WAV file to read, or - for standard input (required)")
		quiet := fs.Bool("quiet", false, "print nothing on standard error unless something fails")
		if err := parse(fs, args); err != nil {
			return err
		}
		if err := required(fs, "mode", "in"); err != nil {
			return err
		}
		m, err := mode()
		if err != nil {
			return err
		}
		s, rate, _, err := readWAV(e, *in)
		if err != nil {
			return err
		}
		d, err := fsk.NewDemodulator(m, rate)
		if err != nil {
			return fmt.Errorf("%s at %d samples per second: %w", m.Name, rate, err)
		}
		w := bufio.NewWriter(e.stdout)
		var ev []fsk.Event
		report := func(ev []fsk.Event) error {
			for _, v := range ev {
				switch v.Kind {
				case fsk.Byte:
					if err := w.WriteByte(v.Byte); err != nil {
						return err
					}
				case fsk.CarrierUp, fsk.CarrierDown:
					if !*quiet {
						fmt.Fprintf(e.stderr, "modem rx: %s at %.3f s\n", v.Kind, float64(v.At)/float64(rate))
					}
				}
			}
			return nil
		}
		for len(s) > 0 {
			n := min(len(s), 8192)
			if err := report(d.Demodulate(ev[:0], s[:n])); err != nil {
				return err
			}
			s = s[n:]
		}
		if err := report(d.Flush(ev[:0])); err != nil {
			return err
		}
		if err := w.Flush(); err != nil {
			return err
		}
		st := d.Stats()
		if !*quiet {
			fmt.Fprintf(e.stderr, "modem rx: %s, %d samples per second: %d bytes, %d framing errors, carrier found %d times\n",
				m, rate, st.Bytes, st.FramingErrors, st.Carriers)
		}
		if st.Carriers == 0 {
			return withHint(errors.New("no carrier in "+*in),
				"check --mode (and --answer or --v23-back): the tones must be the sender's")
		}
		return nil
	}
	return c
}
