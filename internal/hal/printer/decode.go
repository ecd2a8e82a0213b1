package printer

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/text/encoding/charmap"

	"cardlink/internal/hal"
)

// Align is a line's alignment.
type Align uint8

// The alignments, as ESC a numbers them.
const (
	Left Align = iota
	Center
	Right
)

func (a Align) String() string {
	switch a {
	case Left:
		return "left"
	case Center:
		return "center"
	case Right:
		return "right"
	}
	return fmt.Sprintf("Align(%d)", uint8(a))
}

// Line is one printed line.
type Line struct {
	Text  string
	Align Align // the alignment when the line began
	Bold  bool  // some of it was emphasized
	Wide  bool  // some of it was printed double width
	Small bool  // it began in font B (42 columns instead of 32)
	Cut   bool  // not a line: the paper was cut here
	// Dots is how wide the printed characters are, in dots of the
	// paper's LineDots: 12 a character in font A, 9 in font B, twice
	// that double width. A line may mix fonts (ESC ! or ESC M within
	// it); the printer starts a new line when the next character would
	// not fit.
	Dots int
}

// Document is what a stream printed: its lines, in order, cuts included
// (Line.Cut), and how many times the paper was cut.
type Document struct {
	Lines []Line
	Cuts  int
}

// Text renders the document as the paper shows it: each line placed by
// its alignment in hal.ReceiptCols columns (trailing spaces trimmed), and
// each cut as a line of "- - cut - -".
func (d *Document) Text() string {
	var b strings.Builder
	for _, l := range d.Lines {
		if l.Cut {
			b.WriteString(strings.TrimRight(place("- - cut - -", Center, false), " "))
			b.WriteByte('\n')
			continue
		}
		b.WriteString(strings.TrimRight(place(l.Text, l.Align, l.Small), " "))
		b.WriteByte('\n')
	}
	return b.String()
}

func place(s string, a Align, small bool) string {
	cols := hal.ReceiptCols
	if small {
		cols = fontBCols
	}
	pad := cols - len([]rune(s))
	if pad <= 0 || a == Left {
		return s
	}
	if a == Center {
		pad /= 2
	}
	return strings.Repeat(" ", pad) + s
}

// ErrTruncated is what Decode returns (in a *CommandError) when the stream
// ends inside a command.
var ErrTruncated = errors.New("stream ends inside a command")

// ErrUnknown is what Decode returns (in a *CommandError) for a command or
// control byte it does not know.
var ErrUnknown = errors.New("unknown command")

// ErrBadArgument is what Decode returns (in a *CommandError) for a known
// command with an argument outside its range.
var ErrBadArgument = errors.New("bad argument")

// CommandError is a command Decode refused, with its offset in the stream.
type CommandError struct {
	Offset int
	Bytes  []byte // the command's bytes, as far as the stream has them
	Err    error  // ErrTruncated, ErrUnknown or ErrBadArgument
}

func (e *CommandError) Error() string {
	return fmt.Sprintf("printer: ESC/POS at offset %d (% X): %v", e.Offset, e.Bytes, e.Err)
}

func (e *CommandError) Unwrap() error { return e.Err }

// MaxStream is the largest stream Decode reads (a receipt is a few KB),
// and MaxLines the most lines it prints (ESC d feeds up to 255 lines for
// three bytes).
const (
	MaxStream = 1 << 20
	MaxLines  = 100_000
)

// ErrTooLong is what Decode returns for a stream over MaxStream bytes or
// MaxLines lines.
var ErrTooLong = errors.New("printer: ESC/POS stream too long")

// Decode reads an ESC/POS stream as a printer with hal.ReceiptCols
// columns would print it. It knows the commands Encode writes and a few
// more that other encoders write (list in docs/device-hardware.md): text
// in the selected code table (PC437 after ESC @; also PC850, PC858,
// WPC1252), LF, CR (ignored), HT (a space), ESC @ (which discards an
// unprinted line, as a printer clears its buffer), ESC a, ESC E, ESC t,
// ESC d, ESC J, ESC !, ESC -, ESC M (font B: 42 columns), ESC 2, ESC 3,
// FS ., GS ! and GS V. Text past the last column wraps, as on paper; a
// line still open at the end is kept. ESC d n prints the buffer and feeds
// n lines in all, as Epson's reference has it ("ESC d": "Prints the data
// in the print buffer and feeds n lines"): the printed line takes the
// first, so text then ESC d 1 is text then LF, ESC d 0 prints the line
// without a further feed, and on an empty buffer ESC d n feeds n blank
// lines.
//
// The rule for anything else is strict: Decode stops at the first command
// or control byte it does not know, or a known command with an argument
// out of range, and returns a *CommandError with its offset. It never
// skips one: ESC/POS commands have no common length rule, so skipping
// would mean guessing, and a wrong guess prints garbage.
func Decode(b []byte) (*Document, error) {
	if len(b) > MaxStream {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrTooLong, len(b), MaxStream)
	}
	d := &decoder{}
	d.reset()
	if err := d.run(b); err != nil {
		return nil, err
	}
	d.flush(false)
	if len(d.lines) > MaxLines {
		return nil, fmt.Errorf("%w: more than %d lines", ErrTooLong, MaxLines)
	}
	doc := &Document{Lines: make([]Line, 0, len(d.lines))}
	for _, l := range d.lines {
		if l.Cut {
			doc.Cuts++
		}
		doc.Lines = append(doc.Lines, l)
	}
	return doc, nil
}

// decoder is the printer's state while decoding.
type decoder struct {
	page  *charmap.Charmap
	align Align
	bold  bool
	width int // 1 or more: columns a character takes
	cols  int // columns of the font: hal.ReceiptCols or fontBCols

	line    []rune
	used    int // dots used on the line
	started bool
	cur     Line

	lines []Line
}

// reset is ESC @: the modes back to their defaults and the unprinted
// line discarded.
func (d *decoder) reset() {
	d.page, d.align, d.bold, d.width, d.cols = charmap.CodePage437, Left, false, 1, hal.ReceiptCols
	d.line, d.used, d.started = d.line[:0], 0, false
}

// put prints one character.
func (d *decoder) put(r rune) {
	w := d.width * LineDots / d.cols // the font's dots, times the width
	if d.used+w > LineDots {
		d.flush(true)
	}
	if !d.started {
		d.started = true
		d.cur = Line{Align: d.align, Small: d.cols != hal.ReceiptCols}
	}
	d.cur.Bold = d.cur.Bold || d.bold
	d.cur.Wide = d.cur.Wide || d.width > 1
	d.line = append(d.line, r)
	d.used += w
}

// flush ends the line; an empty one counts only if force.
func (d *decoder) flush(force bool) {
	if !d.started && !force {
		return
	}
	if !d.started {
		d.cur = Line{Align: d.align, Small: d.cols != hal.ReceiptCols}
	}
	d.cur.Text, d.cur.Dots = string(d.line), d.used
	d.lines = append(d.lines, d.cur)
	d.line, d.used, d.started = d.line[:0], 0, false
}

func (d *decoder) run(b []byte) error {
	for i := 0; i < len(b); {
		if len(d.lines) > MaxLines {
			return fmt.Errorf("%w: more than %d lines at offset %d", ErrTooLong, MaxLines, i)
		}
		c := b[i]
		fail := func(n int, err error) error {
			end := min(len(b), i+n)
			return &CommandError{Offset: i, Bytes: append([]byte(nil), b[i:end]...), Err: err}
		}
		// arg returns the command's k-th byte (k ≥ 1), if the stream has it.
		arg := func(k int) (byte, bool) {
			if i+k < len(b) {
				return b[i+k], true
			}
			return 0, false
		}
		switch {
		case c >= 0x20 && c < 0x7F:
			d.put(rune(c))
			i++
		case c >= 0x80:
			d.put(d.page.DecodeByte(c))
			i++
		case c == bLF:
			d.flush(true)
			i++
		case c == bCR:
			i++
		case c == bHT:
			d.put(' ')
			i++
		case c == bESC:
			cmd, ok := arg(1)
			if !ok {
				return fail(1, ErrTruncated)
			}
			switch cmd {
			case escInit:
				d.reset()
				i += 2
				continue
			case escSpacing0:
				i += 2
				continue
			}
			n, ok := arg(2)
			switch cmd {
			case escAlign, escEmphasis, escCodePage, escFeedLines, escMode, escUnderline, escFont, escSpacing, escFeedDots:
			default:
				return fail(2, ErrUnknown)
			}
			if !ok {
				return fail(2, ErrTruncated)
			}
			switch cmd {
			case escAlign:
				switch {
				case n <= 2:
					d.align = Align(n)
				case n >= '0' && n <= '2':
					d.align = Align(n - '0')
				default:
					return fail(3, ErrBadArgument)
				}
			case escEmphasis:
				d.bold = n&1 == 1
			case escCodePage:
				p, ok := codePages[n]
				if !ok {
					return fail(3, ErrBadArgument)
				}
				d.page = p
			case escFeedLines:
				// ESC d n prints the buffer and feeds n lines: printing
				// a line with its feed is the first of them (ESC d 1
				// after text is LF), and ESC d 0 prints it without a
				// feed. An empty buffer feeds n blank lines.
				if d.started && n > 0 {
					n--
				}
				d.flush(false)
				for range n {
					d.flush(true)
				}
			case escMode:
				d.bold = n&0x08 != 0
				d.width = 1
				if n&0x20 != 0 {
					d.width = 2
				}
				d.cols = hal.ReceiptCols
				if n&0x01 != 0 {
					d.cols = fontBCols
				}
			case escFont:
				switch n {
				case 0, '0':
					d.cols = hal.ReceiptCols
				case 1, '1':
					d.cols = fontBCols
				default:
					return fail(3, ErrBadArgument)
				}
			case escFeedDots:
				d.flush(false)
			case escSpacing:
				// line spacing changes only the look
			case escUnderline:
				// underline changes only the look
			}
			i += 3
		case c == bFS:
			cmd, ok := arg(1)
			if !ok {
				return fail(1, ErrTruncated)
			}
			if cmd != fsKanjiOff {
				return fail(2, ErrUnknown)
			}
			i += 2
		case c == bGS:
			cmd, ok := arg(1)
			if !ok {
				return fail(1, ErrTruncated)
			}
			switch cmd {
			case gsSize:
				n, ok := arg(2)
				if !ok {
					return fail(2, ErrTruncated)
				}
				w, h := int(n>>4)+1, int(n&0x0F)+1
				if w > 8 || h > 8 {
					return fail(3, ErrBadArgument)
				}
				d.width = w
				i += 3
			case gsCut:
				m, ok := arg(2)
				if !ok {
					return fail(2, ErrTruncated)
				}
				size := 3
				switch m {
				case 0, 1, 48, 49:
				case 65, 66:
					if _, ok := arg(3); !ok {
						return fail(3, ErrTruncated)
					}
					size = 4
				default:
					return fail(3, ErrBadArgument)
				}
				d.flush(false)
				d.lines = append(d.lines, Line{Cut: true})
				i += size
			default:
				return fail(2, ErrUnknown)
			}
		default:
			return fail(1, ErrUnknown)
		}
	}
	return nil
}
