package printer_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"cardlink/internal/hal"
	"cardlink/internal/hal/printer"
)

var sample = hal.Receipt{
	Title: "Café Zürich — receipt",
	Lines: []string{
		"Item                      € 4.50",
		"Espresso doppio with a very long description that wraps",
		"",
		"Paid by card 4999 **** **** 0013",
	},
	Footer: "Thank you!",
}

func texts(d *printer.Document) []string {
	var out []string
	for _, l := range d.Lines {
		if !l.Cut {
			out = append(out, l.Text)
		}
	}
	return out
}

func TestEncodeBytes(t *testing.T) {
	got := printer.Encode(hal.Receipt{Title: "T", Lines: []string{"ab"}, Footer: "F"}, printer.Options{Cut: true})
	want := []byte{
		0x1B, '@', 0x1B, 't', 19, // init, PC858
		0x1B, 'a', 1, 0x1B, 'E', 1, 'T', '\n', 0x1B, 'E', 0, 0x1B, 'a', 0, '\n', // title
		'a', 'b', '\n',
		'\n', 0x1B, 'a', 1, 'F', '\n', 0x1B, 'a', 0, // footer
		0x1B, 'd', 4, 0x1D, 'V', 66, 0, // feed, cut
	}
	if !bytes.Equal(got, want) {
		t.Errorf("Encode =\n% X\nwant\n% X", got, want)
	}
}

func TestRoundTrip(t *testing.T) {
	doc, err := printer.Decode(printer.Encode(sample, printer.Options{Cut: true}))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"Café Zürich - receipt", "",
		"Item                      € 4.50",
		"Espresso doppio with a very long", "description that wraps",
		"",
		"Paid by card 4999 **** **** 0013",
		"", "Thank you!", "", "", "", "",
	}
	if got := texts(doc); !reflect.DeepEqual(got, want) {
		t.Errorf("decoded lines =\n%q\nwant\n%q", got, want)
	}
	if n := printer.Lines(sample); n != len(want) {
		t.Errorf("Lines(sample) = %d, want %d", n, len(want))
	}
	if doc.Cuts != 1 || !doc.Lines[len(doc.Lines)-1].Cut {
		t.Errorf("cuts = %d (last line %+v), want 1 at the end", doc.Cuts, doc.Lines[len(doc.Lines)-1])
	}
	if l := doc.Lines[0]; l.Align != printer.Center || !l.Bold {
		t.Errorf("title line = %+v, want centred and bold", l)
	}
	if l := doc.Lines[2]; l.Align != printer.Left || l.Bold {
		t.Errorf("item line = %+v, want left, not bold", l)
	}
	if l := doc.Lines[8]; l.Align != printer.Center || l.Bold {
		t.Errorf("footer line = %+v, want centred, not bold", l)
	}
	for _, l := range doc.Lines {
		if n := len([]rune(l.Text)); n > hal.ReceiptCols {
			t.Errorf("line %q: %d runes, more than %d", l.Text, n, hal.ReceiptCols)
		}
	}
}

func TestPreview(t *testing.T) {
	got, err := printer.Preview(hal.Receipt{Title: "ACME", Lines: []string{"Total  12.00 EUR"}, Footer: "bye"})
	if err != nil {
		t.Fatal(err)
	}
	want := "              ACME\n\nTotal  12.00 EUR\n\n              bye\n\n\n\n\n          - - cut - -\n"
	if got != want {
		t.Errorf("Preview =\n%s\nwant\n%s", got, want)
	}
	if _, err := printer.Preview(hal.Receipt{Lines: make([]string, printer.MaxLines+1)}); !errors.Is(err, printer.ErrTooLong) {
		t.Errorf("Preview of %d lines: %v, want ErrTooLong", printer.MaxLines+1, err)
	}
}

func TestFold(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain ASCII 123", "plain ASCII 123"},
		{"Grüße, Ça coûte 5 € / £3", "Grüße, Ça coûte 5 € / £3"},
		{"e\u0301te\u0301", "été"}, // decomposed accents compose
		{"Erdős Łódź Čapek", "Erdos Lódz Capek"},
		{"“quoted” – it’s…", `"quoted" - it's...`},
		{"tab\there\x1b@\x1dV\x00", "tab here @ V "}, // no control byte gets through
		{"日本", "??"},
		{"\u200b", ""},
	}
	for _, tc := range tests {
		if got := printer.Fold(tc.in); got != tc.want {
			t.Errorf("Fold(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestNoInjection: a merchant's text cannot put commands in the stream.
func TestNoInjection(t *testing.T) {
	evil := "Item\x1b@\x1dV\x00\x1b\x21\x30\x10\x04\x01 end"
	b := printer.Encode(hal.Receipt{Lines: []string{evil}, Title: evil, Footer: evil}, printer.Options{})
	doc, err := printer.Decode(b)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if doc.Cuts != 0 {
		t.Errorf("text made the printer cut")
	}
	for _, l := range doc.Lines {
		if l.Wide {
			t.Errorf("text changed the print mode: %+v", l)
		}
	}
	if n := bytes.Count(b, []byte{0x1B}); n != 9 { // init, code page, 2×align+2×bold (title), 2×align (footer), feed
		t.Errorf("stream has %d ESC bytes, want the encoder's 9", n)
	}
}

func TestWrap(t *testing.T) {
	tests := []struct {
		in   string
		cols int
		want []string
	}{
		{"", 10, []string{""}},
		{"short", 10, []string{"short"}},
		{"exactly 10", 10, []string{"exactly 10"}},
		{"one two three four", 10, []string{"one two", "three four"}},
		{"abcdefghijklmnopqrstuvwxyz", 10, []string{"abcdefghij", "klmnopqrst", "uvwxyz"}},
		{"a\nb\r\nc", 10, []string{"a", "b", "c"}},
		{"trailing   ", 10, []string{"trailing"}},
		{"Total      9.99", 10, []string{"Total", "9.99"}},
		{"Total  9.99", 12, []string{"Total  9.99"}},
	}
	for _, tc := range tests {
		if got := printer.Wrap(tc.in, tc.cols); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Wrap(%q, %d) = %q, want %q", tc.in, tc.cols, got, tc.want)
		}
	}
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name  string
		in    []byte
		lines []string
		cuts  int
	}{
		{"text without LF is kept", []byte("abc"), []string{"abc"}, 0},
		{"CR ignored, HT a space", []byte("a\rb\tc\n"), []string{"ab c"}, 0},
		{"auto wrap at 32 columns", []byte(strings.Repeat("x", 40) + "\n"), []string{strings.Repeat("x", 32), strings.Repeat("x", 8)}, 0},
		{"double width wraps at 16", []byte("\x1d!\x10" + strings.Repeat("w", 20) + "\n"), []string{strings.Repeat("w", 16), "wwww"}, 0},
		{"PC437 by default", []byte{0x82, '\n'}, []string{"é"}, 0},
		{"PC858 euro", []byte{0x1B, 't', 19, 0xD5, '\n'}, []string{"€"}, 0},
		{"WPC1252 euro", []byte{0x1B, 't', 16, 0x80, '\n'}, []string{"€"}, 0},
		{"feed lines", []byte("a\x1bd\x02"), []string{"a", ""}, 0},
		{"cut variants", []byte("a\n\x1dV\x00\x1dV1\x1dVA\x05"), []string{"a"}, 3},
		{"ESC ! and ESC - change the look only", []byte("\x1b!\x08b\x1b-\x01u\n"), []string{"bu"}, 0},
		{"ascii align digits", []byte("\x1ba2r\n"), []string{"r"}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			doc, err := printer.Decode(tc.in)
			if err != nil {
				t.Fatalf("Decode(% X): %v", tc.in, err)
			}
			if got := texts(doc); !reflect.DeepEqual(got, tc.lines) || doc.Cuts != tc.cuts {
				t.Errorf("Decode(% X) = %q, %d cuts; want %q, %d cuts", tc.in, got, doc.Cuts, tc.lines, tc.cuts)
			}
		})
	}
}

// TestDecodeFeedLines pins ESC d n. Epson's ESC/POS command reference
// words LF as "prints the data in the print buffer and feeds one line"
// and ESC d n as "prints the data in the print buffer and feeds n lines":
// the line printed from the buffer is the first of the n, so after text
// ESC d 1 is one LF and ESC d 0 prints the line with no further feed; on
// an empty buffer ESC d n feeds n blank lines.
func TestDecodeFeedLines(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		lines []string
	}{
		{"text, ESC d 0", "a\x1bd\x00", []string{"a"}},
		{"text, ESC d 1", "a\x1bd\x01", []string{"a"}},
		{"text, ESC d 2", "a\x1bd\x02", []string{"a", ""}},
		{"text, ESC d 5", "a\x1bd\x05", []string{"a", "", "", "", ""}},
		{"text, ESC d 0, text", "a\x1bd\x00b\n", []string{"a", "b"}},
		{"text, ESC d 2, text", "a\x1bd\x02b\n", []string{"a", "", "b"}},
		{"empty buffer, ESC d 0", "\x1bd\x00", nil},
		{"empty buffer, ESC d 1", "\x1bd\x01", []string{""}},
		{"empty buffer, ESC d 2", "\x1bd\x02", []string{"", ""}},
		{"after LF, ESC d 2", "a\n\x1bd\x02", []string{"a", "", ""}},
		{"after ESC @ discards the buffer", "a\x1b@\x1bd\x01", []string{""}},
		{"1st LF LF 2nd ESC d 2 3rd LF", "1st\n\n2nd\x1bd\x023rd\n", []string{"1st", "", "2nd", "", "3rd"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			doc, err := printer.Decode([]byte(tc.in))
			if err != nil {
				t.Fatalf("Decode(%q): %v", tc.in, err)
			}
			if got := texts(doc); !reflect.DeepEqual(got, tc.lines) {
				t.Errorf("Decode(%q) = %q, want %q", tc.in, got, tc.lines)
			}
		})
	}
	// Text then ESC d 1 prints what text then LF prints, on any line.
	for _, s := range []string{"x", strings.Repeat("y", 40), "\x1ba\x01\x1bE\x01title"} {
		lf, err1 := printer.Decode([]byte(s + "\n"))
		esc, err2 := printer.Decode([]byte(s + "\x1bd\x01"))
		if err1 != nil || err2 != nil {
			t.Fatalf("Decode(%q + LF / ESC d 1): %v, %v", s, err1, err2)
		}
		if !reflect.DeepEqual(lf, esc) {
			t.Errorf("%q then ESC d 1 = %+v, then LF = %+v; want the same", s, esc.Lines, lf.Lines)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name   string
		in     []byte
		offset int
		want   error
	}{
		{"unknown ESC command", []byte("ok\n\x1bZ\x01"), 3, printer.ErrUnknown},
		{"unknown GS command", []byte("\x1dk\x04"), 0, printer.ErrUnknown},
		{"DLE EOT status request", []byte("a\x10\x04\x01"), 1, printer.ErrUnknown},
		{"NUL", []byte{'a', 0}, 1, printer.ErrUnknown},
		{"lone ESC", []byte("abc\x1b"), 3, printer.ErrTruncated},
		{"ESC a without argument", []byte("\x1ba"), 0, printer.ErrTruncated},
		{"GS V 66 without n", []byte("\x1dVB"), 0, printer.ErrTruncated},
		{"alignment 7", []byte("\x1ba\x07"), 0, printer.ErrBadArgument},
		{"code page 99", []byte("\x1bt\x63"), 0, printer.ErrBadArgument},
		{"cut mode 2", []byte("\x1dV\x02"), 0, printer.ErrBadArgument},
		{"size 9 wide", []byte("\x1d!\x80"), 0, printer.ErrBadArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := printer.Decode(tc.in)
			var ce *printer.CommandError
			if !errors.As(err, &ce) || !errors.Is(err, tc.want) || ce.Offset != tc.offset {
				t.Fatalf("Decode(% X) = %v, want %v at offset %d", tc.in, err, tc.want, tc.offset)
			}
			if !strings.Contains(err.Error(), "offset") {
				t.Errorf("error %q does not say where", err)
			}
		})
	}
	if _, err := printer.Decode(make([]byte, printer.MaxStream+1)); !errors.Is(err, printer.ErrTooLong) {
		t.Errorf("Decode of an oversized stream: %v, want ErrTooLong", err)
	}
	// ESC d 255 prints 255 lines for 3 bytes: the line limit stops it.
	feeds := bytes.Repeat([]byte{0x1B, 'd', 255}, printer.MaxLines/255+2)
	if _, err := printer.Decode(feeds); !errors.Is(err, printer.ErrTooLong) {
		t.Errorf("Decode of %d lines of feed: %v, want ErrTooLong", 255*(printer.MaxLines/255+2), err)
	}
	if _, err := printer.Decode(bytes.Repeat([]byte{0x1B, 'd', 255}, printer.MaxLines/255-1)); err != nil {
		t.Errorf("Decode of fewer than MaxLines lines of feed: %v", err)
	}
}

// TestOpenAppends prints to a file path twice and reads both receipts back.
func TestOpenAppends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lp0")
	ctx := context.Background()
	for i := range 2 {
		p, err := printer.Open(path, printer.Options{Cut: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Print(ctx, hal.Receipt{Title: "R", Lines: []string{strings.Repeat("n", i+1)}}); err != nil {
			t.Fatal(err)
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		if err := p.Print(ctx, hal.Receipt{}); err == nil {
			t.Errorf("Print after Close: nil error")
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := printer.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(texts(doc), "|")
	if want := "R||n|||||R||nn||||"; got != want || doc.Cuts != 2 {
		t.Errorf("file holds %q with %d cuts, want %q with 2", got, doc.Cuts, want)
	}
	ctx2, cancel := context.WithCancel(ctx)
	cancel()
	var buf bytes.Buffer
	if err := printer.New(&buf, printer.Options{}).Print(ctx2, sample); !errors.Is(err, context.Canceled) || buf.Len() != 0 {
		t.Errorf("Print with a cancelled context = %v, wrote %d bytes", err, buf.Len())
	}
	if _, err := printer.Open(filepath.Join(t.TempDir(), "no", "such", "dir"), printer.Options{}); err == nil {
		t.Errorf("Open in a missing directory: nil error")
	}
}

// TestPrinterLines: what a Printer says it prints (the controller's
// energy count) is what the paper shows, with and without the cut.
func TestPrinterLines(t *testing.T) {
	receipts := []hal.Receipt{
		sample,
		{},
		{Title: "T"},
		{Lines: []string{strings.Repeat("long ", 30), "a\nb"}, Footer: "two\nlines"},
	}
	for _, o := range []printer.Options{{}, {Cut: true}} {
		for _, r := range receipts {
			var buf bytes.Buffer
			p := printer.New(&buf, o)
			if err := p.Print(context.Background(), r); err != nil {
				t.Fatal(err)
			}
			doc, err := printer.Decode(buf.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			if got, want := p.Lines(r), len(texts(doc)); got != want {
				t.Errorf("%+v: Lines(%q) = %d, the paper shows %d lines", o, r, got, want)
			}
		}
	}
}

// TestConcurrentPrint: receipts printed at once never interleave.
func TestConcurrentPrint(t *testing.T) {
	var buf bytes.Buffer
	p := printer.New(&buf, printer.Options{Cut: true})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			r := hal.Receipt{Title: fmt.Sprint("R", i), Lines: []string{strings.Repeat(fmt.Sprint(i), 40)}}
			if err := p.Print(context.Background(), r); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	doc, err := printer.Decode(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if doc.Cuts != 8 {
		t.Fatalf("%d cuts, want 8", doc.Cuts)
	}
	// Each receipt: title, blank, two wrapped lines of its own digit, 4 feeds, cut.
	for k := 0; k < len(doc.Lines); k += 9 {
		title := doc.Lines[k].Text
		d := strings.TrimPrefix(title, "R")
		if doc.Lines[k+2].Text != strings.Repeat(d, 32) || doc.Lines[k+3].Text != strings.Repeat(d, 8) || !doc.Lines[k+8].Cut {
			t.Errorf("receipt at line %d (%q) interleaved: %+v", k, title, doc.Lines[k:k+9])
		}
	}
}

// stuckWriter blocks every Write until release is closed.
type stuckWriter struct {
	release chan struct{}
	buf     bytes.Buffer
}

func (w *stuckWriter) Write(b []byte) (int, error) {
	<-w.release
	return w.buf.Write(b)
}

// TestPrintStuck: a printer that blocks does not hold Print past its
// context; the receipt still reaches it once it unblocks.
func TestPrintStuck(t *testing.T) {
	w := &stuckWriter{release: make(chan struct{})}
	p := printer.New(w, printer.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := p.Print(ctx, hal.Receipt{Title: "stuck"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Print to a stuck printer = %v, want DeadlineExceeded", err)
	}
	close(w.release)
	if err := p.Print(context.Background(), hal.Receipt{Title: "next"}); err != nil {
		t.Fatal(err)
	}
	doc, err := printer.Decode(w.buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if got := texts(doc); len(got) < 7 || got[0] != "stuck" || got[6] != "next" {
		t.Errorf("printed %q, want the stuck receipt then the next", got)
	}
}
