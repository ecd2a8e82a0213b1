package printer_test

import (
	"os"
	"reflect"
	"testing"

	"cardlink/internal/hal/printer"
)

// TestDecodeOtherEncoder decodes a receipt written by esc-pos-encoder (npm),
// an encoder independent of ours: testdata/interop/esc-pos-encoder.mjs says
// how it was made. It uses commands Encode does not (FS ., ESC M, CR LF line
// ends, spaces for alignment) and pads its first line before ESC @, which
// a printer discards with its buffer.
func TestDecodeOtherEncoder(t *testing.T) {
	b, err := os.ReadFile("testdata/interop/esc-pos-encoder.bin")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := printer.Decode(b)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	want := []string{
		"Café Zürich",
		"Espresso                € 4.50",
		"A long line that this encoder",
		"wraps at thirty-two columns",
		"",
		"                    Total € 4.50",
		"", "", "",
	}
	if got := texts(doc); !reflect.DeepEqual(got, want) || doc.Cuts != 1 {
		t.Errorf("Decode = %q, %d cuts; want %q, 1 cut", got, doc.Cuts, want)
	}
	if !doc.Lines[0].Bold || doc.Lines[1].Bold {
		t.Errorf("emphasis: %+v, %+v; want the title alone bold", doc.Lines[0], doc.Lines[1])
	}
}
