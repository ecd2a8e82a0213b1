//go:build unix

package printer_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"cardlink/internal/hal"
	"cardlink/internal/hal/printer"
)

// TestOpenDevice prints to a named pipe, which, like /dev/usb/lp0, is a
// device node that exists already and is read by someone else, and to
// /dev/null, a character device.
func TestOpenDevice(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "lp0")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("no named pipes here: %v", err)
	}
	got := make(chan []byte, 1)
	go func() {
		f, err := os.Open(fifo) // blocks until the printer opens its end
		if err != nil {
			t.Error(err)
			got <- nil
			return
		}
		defer f.Close()
		b, err := io.ReadAll(f)
		if err != nil {
			t.Error(err)
		}
		got <- b
	}()
	p, err := printer.Open(fifo, printer.Options{Cut: true})
	if err != nil {
		t.Fatal(err)
	}
	r := hal.Receipt{Title: "Device", Lines: []string{"Total 1.00 EUR"}}
	if err := p.Print(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	b := <-got
	doc, err := printer.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if doc.Cuts != 1 || doc.Lines[0].Text != "Device" || doc.Lines[2].Text != "Total 1.00 EUR" {
		t.Errorf("the device read %+v", doc)
	}

	p, err = printer.Open(os.DevNull, printer.Options{})
	if err != nil {
		t.Fatalf("Open(%s): %v", os.DevNull, err)
	}
	defer p.Close()
	if err := p.Print(context.Background(), r); err != nil {
		t.Errorf("printing to %s: %v", os.DevNull, err)
	}
}
