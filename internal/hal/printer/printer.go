// Package printer is the device's receipt printer: it encodes a
// hal.Receipt as an ESC/POS byte stream for a 58 mm thermal printer
// (hal.ReceiptCols characters of font A a line, code page PC858) and
// writes it to a file or a printer device such as /dev/usb/lp0. Decode
// reads such a stream back to text, for previews and tests
// (docs/device-hardware.md, "Printer").
//
// It imports hal, the standard library and golang.org/x/text (code pages
// and Unicode normalization).
package printer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"unicode"

	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/unicode/norm"

	"cardlink/internal/hal"
)

// ESC/POS bytes and commands (Epson ESC/POS Application Programming
// Guide; the command reference at
// https://download4.epson.biz/sec_pubs/pos/reference_en/escpos/).
// LineDots is the width of a printed line of a 58 mm printer, in dots:
// hal.ReceiptCols characters of font A, 12 dots each.
const LineDots = 384

const (
	bLF  = 0x0A
	bCR  = 0x0D
	bHT  = 0x09
	bESC = 0x1B
	bGS  = 0x1D

	escInit      = '@' // ESC @: initialize the printer
	escAlign     = 'a' // ESC a n: 0 left, 1 center, 2 right (or '0'–'2')
	escEmphasis  = 'E' // ESC E n: emphasis on if bit 0 of n is set
	escCodePage  = 't' // ESC t n: select character code table
	escFeedLines = 'd' // ESC d n: print and feed n lines
	escMode      = '!' // ESC ! n: print mode (bit 3 emphasis, 4 double height, 5 double width)
	escUnderline = '-' // ESC - n: underline
	escFont      = 'M' // ESC M n: font A (0, '0') or B (1, '1')
	escSpacing   = '3' // ESC 3 n: line spacing n dots
	escSpacing0  = '2' // ESC 2: default line spacing
	escFeedDots  = 'J' // ESC J n: print and feed n dots
	bFS          = 0x1C
	fsKanjiOff   = '.' // FS .: cancel Kanji character mode
	gsSize       = '!' // GS ! n: character size (width-1 in bits 4–6, height-1 in bits 0–2)
	gsCut        = 'V' // GS V m [n]: cut (m 0, 1, 48, 49; or 65, 66 with n)

	// fontBCols is how many characters of font B (9 dots wide) fit the
	// 384 dots of a 58 mm printer; font A (12 dots) fits hal.ReceiptCols.
	fontBCols = 42

	// codePagePC858 is ESC t's number for PC858 (PC850 Multilingual with
	// the euro sign at 0xD5).
	codePagePC858 = 19
)

// codePages are the code tables the decoder knows, by ESC t number.
var codePages = map[byte]*charmap.Charmap{
	0:  charmap.CodePage437,
	2:  charmap.CodePage850,
	16: charmap.Windows1252,
	19: charmap.CodePage858,
}

// Options change how a receipt is printed.
type Options struct {
	// Cut ends the receipt with a partial cut (GS V 66 0) after feeding
	// it past the cutter; without it the paper is only fed.
	Cut bool
}

// feedLines is how many lines the encoder feeds after a receipt, so its
// end clears the tear bar or cutter.
const feedLines = 4

// Encode encodes r as an ESC/POS stream: initialize, select PC858, the
// title centred and emphasized, the lines left-aligned, the footer
// centred, each wrapped at hal.ReceiptCols; then feed and, if o.Cut, cut.
// Text is folded to PC858 first (Fold).
func Encode(r hal.Receipt, o Options) []byte {
	var b bytes.Buffer
	b.Write([]byte{bESC, escInit, bESC, escCodePage, codePagePC858})
	block := func(align byte, bold bool, lines ...string) {
		if align != 0 {
			b.Write([]byte{bESC, escAlign, align})
		}
		if bold {
			b.Write([]byte{bESC, escEmphasis, 1})
		}
		for _, l := range lines {
			for _, w := range Wrap(l, hal.ReceiptCols) {
				b.Write(encodePC858(w))
				b.WriteByte(bLF)
			}
		}
		if bold {
			b.Write([]byte{bESC, escEmphasis, 0})
		}
		if align != 0 {
			b.Write([]byte{bESC, escAlign, 0})
		}
	}
	if r.Title != "" {
		block(1, true, r.Title)
		b.WriteByte(bLF)
	}
	block(0, false, r.Lines...)
	if r.Footer != "" {
		b.WriteByte(bLF)
		block(1, false, r.Footer)
	}
	b.Write([]byte{bESC, escFeedLines, feedLines})
	if o.Cut {
		b.Write([]byte{bGS, gsCut, 66, 0})
	}
	return b.Bytes()
}

// Lines is how many lines Encode prints for r, feed included: the n of
// Power.Check(hal.OpPrinter, n) before printing it.
func Lines(r hal.Receipt) int {
	n := feedLines
	if r.Title != "" {
		n += len(Wrap(r.Title, hal.ReceiptCols)) + 1
	}
	for _, l := range r.Lines {
		n += len(Wrap(l, hal.ReceiptCols))
	}
	if r.Footer != "" {
		n += 1 + len(Wrap(r.Footer, hal.ReceiptCols))
	}
	return n
}

// encodePC858 encodes folded text; anything Fold let through that PC858
// lacks becomes '?'.
func encodePC858(s string) []byte {
	out := make([]byte, 0, len(s))
	for _, r := range s {
		switch c, ok := charmap.CodePage858.EncodeRune(r); {
		case r >= 0x20 && r < 0x7F:
			out = append(out, byte(r))
		case ok && c >= 0x80:
			out = append(out, c)
		default:
			out = append(out, '?')
		}
	}
	return out
}

// transliterations are what Fold writes for common characters PC858
// lacks.
var transliterations = map[rune]string{
	'‘': "'", '’': "'", '‚': "'", '′': "'", '‹': "<", '›': ">",
	'“': `"`, '”': `"`, '„': `"`, '″': `"`,
	'–': "-", '—': "-", '‒': "-", '―': "-", '−': "-", '‐': "-",
	'…': "...", '•': "*", '\u00A0': " ", '\u202F': " ",
	'™': "TM", '≤': "<=", '≥': ">=", '≠': "!=", '×': "x",
	'Ł': "L", 'ł': "l", 'Đ': "D", 'đ': "d", 'Ħ': "H", 'ħ': "h", 'Œ': "OE", 'œ': "oe",
}

// Fold maps s to text the printer can print in PC858: it composes
// accents (NFC); keeps printable ASCII and what PC858 has (é, ß, £, €…);
// transliterates common typography (’ “ ” – — … → ' " " - - ...); strips
// accents PC858 lacks (ő → o, č → c); turns control characters (which
// could smuggle printer commands) and tabs into spaces, and anything else
// into '?'.
func Fold(s string) string {
	s = norm.NFC.String(s)
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 0x20 && r < 0x7F:
			b.WriteRune(r)
		case r < 0x20 || r == 0x7F || (r >= 0x80 && r < 0xA0):
			b.WriteByte(' ')
		case printable(r):
			b.WriteRune(r)
		case transliterations[r] != "":
			b.WriteString(transliterations[r])
		case unicode.Is(unicode.Mn, r) || unicode.Is(unicode.Cf, r):
			// a stray combining mark or format character: drop it
		default:
			var base []rune
			for _, d := range norm.NFD.String(string(r)) {
				if d < 0x7F && d >= 0x20 || printable(d) {
					base = append(base, d)
				}
			}
			if len(base) > 0 {
				b.WriteString(string(base))
			} else {
				b.WriteByte('?')
			}
		}
	}
	return b.String()
}

// printable reports whether PC858 has r above ASCII.
func printable(r rune) bool {
	c, ok := charmap.CodePage858.EncodeRune(r)
	return ok && c >= 0x80
}

// Wrap folds s (Fold) and breaks it into lines of at most cols runes: at
// newlines, then at the last space that fits (the space is dropped), or
// inside a word longer than a line. Spaces inside a line are kept, so
// columns stay aligned. An empty s is one empty line.
func Wrap(s string, cols int) []string {
	if cols < 1 {
		cols = 1
	}
	var out []string
	for _, para := range strings.Split(strings.ReplaceAll(s, "\r\n", "\n"), "\n") {
		r := []rune(strings.TrimRight(Fold(para), " "))
		for len(r) > cols {
			cut := -1
			for i := cols; i > 0; i-- {
				if r[i] == ' ' {
					cut = i
					break
				}
			}
			if cut <= 0 {
				out = append(out, string(r[:cols]))
				r = r[cols:]
				continue
			}
			out = append(out, strings.TrimRight(string(r[:cut]), " "))
			r = r[cut+1:]
		}
		out = append(out, string(r))
	}
	return out
}

// Preview is the text a printer would print for r (Encode with a cut,
// then Decode). It fails only for a receipt longer than Decode reads
// (MaxLines or MaxStream).
func Preview(r hal.Receipt) (string, error) {
	d, err := Decode(Encode(r, Options{Cut: true}))
	if err != nil {
		return "", fmt.Errorf("previewing receipt: %w", err)
	}
	return d.Text(), nil
}

// Printer writes receipts to an io.Writer. It implements hal.Printer; its
// methods are safe for concurrent use (receipts never interleave).
type Printer struct {
	opts Options

	mu sync.Mutex
	w  io.Writer
	c  io.Closer
}

var _ hal.Printer = (*Printer)(nil)

// New returns a printer writing to w.
func New(w io.Writer, o Options) *Printer { return &Printer{w: w, opts: o} }

// Open returns a printer writing to path: a file, created if need be, or
// a printer device such as /dev/usb/lp0. It opens path for appending, so
// receipts accumulate in a file and a device is never truncated.
func Open(path string, o Options) (*Printer, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening printer: %w", err)
	}
	return &Printer{w: f, c: f, opts: o}, nil
}

// Lines is Lines(r): how many lines Print prints for r (the cut, with
// Options.Cut, is not a line).
func (p *Printer) Lines(r hal.Receipt) int { return Lines(r) }

// Print writes r as one ESC/POS stream. It fails, writing nothing, if ctx
// has ended, and with the writer's error. If ctx ends while the writer
// blocks (a printer out of paper or offline), Print returns ctx's error at
// once; the write goes on in the background and later Prints wait for it.
func (p *Printer) Print(ctx context.Context, r hal.Receipt) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("printing receipt: %w", err)
	}
	b := Encode(r, p.opts)
	done := make(chan error, 1)
	go func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.w == nil {
			done <- errors.New("printer closed")
			return
		}
		if ctx.Err() != nil { // waited for another receipt until ctx ended
			done <- ctx.Err()
			return
		}
		_, err := p.w.Write(b)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("printing receipt: %w", err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("printing receipt: %w (the printer may still print it)", ctx.Err())
	}
}

// Close closes the file or device Open opened; later Prints fail.
func (p *Printer) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.c
	p.w, p.c = nil, nil
	if c != nil {
		return c.Close()
	}
	return nil
}
