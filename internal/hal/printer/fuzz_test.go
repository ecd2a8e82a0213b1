package printer_test

import (
	"reflect"
	"testing"
	"unicode/utf8"

	"cardlink/internal/hal"
	"cardlink/internal/hal/printer"
)

// FuzzDecode feeds the decoder arbitrary bytes: it must not panic, what
// it accepts must fit the paper, and ESC d 1 after it prints what LF
// prints (both print the buffer and feed one line).
func FuzzDecode(f *testing.F) {
	f.Add(printer.Encode(hal.Receipt{Title: "T", Lines: []string{"a", "€ 1"}, Footer: "f"}, printer.Options{Cut: true}))
	f.Add([]byte("\x1b!\x20wide\x1d!\x33x\n\x1dVA\x00"))
	f.Add([]byte("\x1bt\x10\x80\x81\xff\x1ba1\x1bE\x01"))
	f.Add([]byte("\x1c.\x1bM\x01small font line\x1b3\x18\x1bJ\x30\x1b2\x1b!\x01"))
	f.Add([]byte("a\x1bd\x00b\x1bd\x01c\x1bd\x02\x1bd\x00\x1bd\x02"))
	f.Fuzz(func(t *testing.T, b []byte) {
		doc, err := printer.Decode(b)
		if err != nil {
			return
		}
		cuts := 0
		for _, l := range doc.Lines {
			// A character takes 9 dots (font B) to 8 × 12 (font A, 8
			// times as wide); a line may mix fonts.
			n := utf8.RuneCountInString(l.Text)
			if l.Dots > printer.LineDots || l.Dots < 9*n || l.Dots > 96*n {
				t.Fatalf("line %+v: %d characters in %d dots, on a line of %d", l, n, l.Dots, printer.LineDots)
			}
			if !l.Small && l.Dots == 12*n && n > hal.ReceiptCols {
				t.Fatalf("line %+v is wider than the paper", l)
			}
			if l.Cut {
				cuts++
			}
		}
		if cuts != doc.Cuts {
			t.Fatalf("Cuts = %d, but %d cut lines", doc.Cuts, cuts)
		}
		_ = doc.Text()

		lf, err1 := printer.Decode(append(b[:len(b):len(b)], '\n'))
		feed, err2 := printer.Decode(append(b[:len(b):len(b)], 0x1B, 'd', 1))
		if (err1 == nil) != (err2 == nil) {
			t.Fatalf("then LF: %v; then ESC d 1: %v", err1, err2)
		}
		if err1 == nil && !reflect.DeepEqual(lf, feed) {
			t.Fatalf("then LF: %+v\nthen ESC d 1: %+v", lf.Lines, feed.Lines)
		}
	})
}

// FuzzEncode checks that any receipt encodes to a stream the decoder reads
// back as the wrapped text.
func FuzzEncode(f *testing.F) {
	f.Add("Café", "Item € 4.50", "a very long line of text that has to be wrapped somewhere", "bye")
	f.Add("\x1b@", "\x1dV\x00", "日本語", "")
	f.Fuzz(func(t *testing.T, title, l1, l2, footer string) {
		r := hal.Receipt{Title: title, Lines: []string{l1, l2}, Footer: footer}
		doc, err := printer.Decode(printer.Encode(r, printer.Options{Cut: true}))
		if err != nil {
			t.Fatalf("Decode(Encode(%q)): %v", r, err)
		}
		var want []string
		if title != "" {
			want = append(append(want, printer.Wrap(title, hal.ReceiptCols)...), "")
		}
		want = append(want, printer.Wrap(l1, hal.ReceiptCols)...)
		want = append(want, printer.Wrap(l2, hal.ReceiptCols)...)
		if footer != "" {
			want = append(append(want, ""), printer.Wrap(footer, hal.ReceiptCols)...)
		}
		want = append(want, "", "", "", "")
		if got := texts(doc); !reflect.DeepEqual(got, want) || doc.Cuts != 1 {
			t.Fatalf("Decode(Encode(%q)) = %q (%d cuts), want %q", r, got, doc.Cuts, want)
		}
		if n := printer.Lines(r); n != len(want) {
			t.Fatalf("Lines(%q) = %d, printed %d", r, n, len(want))
		}
	})
}
