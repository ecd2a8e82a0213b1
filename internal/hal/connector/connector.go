// Package connector is the device's peripheral configuration: which
// peripherals are built in, which are attached through the external
// connector, and which are absent, read from a small JSON file with strict
// validation, and the drivers that configuration opens
// (docs/device-hardware.md, "Connector").
//
// It imports hal, its printer and biometric drivers and the standard
// library.
package connector

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"cardlink/internal/hal"
	"cardlink/internal/hal/biometric"
	"cardlink/internal/hal/printer"
)

// Attach is how a peripheral is attached.
type Attach string

// The attachments.
const (
	None     Attach = "none"     // absent
	BuiltIn  Attach = "builtin"  // inside the device
	External Attach = "external" // on the external connector
)

// Config is the peripheral configuration. The display and keypad are
// always built in; the printer and the sensor may be built in, external
// or absent.
type Config struct {
	Display Attach  `json:"display"`
	Keypad  Attach  `json:"keypad"`
	Printer Printer `json:"printer"`
	Sensor  Sensor  `json:"sensor"`
}

// Printer configures the receipt printer. A built-in printer writes its
// ESC/POS stream to the file Path; an external one to the device Path
// (e.g. /dev/usb/lp0). Both append.
type Printer struct {
	Attach Attach `json:"attach"`
	Path   string `json:"path,omitempty"`
	Cut    bool   `json:"cut,omitempty"` // the printer has a cutter
}

// Sensor configures the biometric sensor. The built-in one is simulated:
// the holder's finger Finger, capture noise seeded by Seed. An external
// one delivers its template in the file Path.
type Sensor struct {
	Attach Attach `json:"attach"`
	Finger uint64 `json:"finger,omitempty"`
	Seed   uint64 `json:"seed,omitempty"`
	Path   string `json:"path,omitempty"`
}

// Default is the configuration with no file: built-in display and keypad,
// no printer, the built-in simulated sensor with finger 1.
func Default() Config {
	return Config{
		Display: BuiltIn,
		Keypad:  BuiltIn,
		Printer: Printer{Attach: None},
		Sensor:  Sensor{Attach: BuiltIn, Finger: 1, Seed: 1},
	}
}

// Error is a configuration the parser or Validate refused: the field (a
// JSON path such as "printer.path"; empty for the whole file) and why.
type Error struct {
	Field string
	Msg   string
	Err   error // the JSON decoder's error, if any
}

func (e *Error) Error() string {
	if e.Field == "" {
		return "connector config: " + e.Msg
	}
	return fmt.Sprintf("connector config: %s: %s", e.Field, e.Msg)
}

func (e *Error) Unwrap() error { return e.Err }

// MaxSize is the largest configuration file Parse reads.
const MaxSize = 64 << 10

// Parse reads a configuration: one JSON object whose fields override
// Default. It refuses, with an *Error, anything but one object of known
// fields (case-sensitive), duplicate fields, values of the wrong type and
// configurations Validate refuses; the Config is then the zero value.
func Parse(b []byte) (Config, error) {
	c, err := parse(b)
	if err != nil {
		return Config{}, err
	}
	return c, nil
}

func parse(b []byte) (Config, error) {
	c := Default()
	if len(b) > MaxSize {
		return c, &Error{Msg: fmt.Sprintf("%d bytes, more than %d", len(b), MaxSize)}
	}
	t := bytes.TrimSpace(b)
	if len(t) == 0 || t[0] != '{' {
		return c, &Error{Msg: "want a JSON object {…}"}
	}
	if err := checkFields(b); err != nil {
		return c, err
	}
	// Sections the file names start from their zero value, so a section
	// says everything about its peripheral.
	var names map[string]json.RawMessage
	if err := json.Unmarshal(b, &names); err != nil {
		return c, jsonError(b, err)
	}
	if _, ok := names["printer"]; ok {
		c.Printer = Printer{}
	}
	if _, ok := names["sensor"]; ok {
		c.Sensor = Sensor{}
	}
	// checkFields refused unknown fields, and the Unmarshal above data
	// after the object.
	if err := json.Unmarshal(b, &c); err != nil {
		return c, jsonError(b, err)
	}
	if err := c.Validate(); err != nil {
		return c, err
	}
	return c, nil
}

// Load reads and parses the file at path; on error the Config is the zero
// value.
func Load(path string) (Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return Config{}, fmt.Errorf("reading connector config: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return Config{}, fmt.Errorf("reading connector config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// jsonError turns the decoder's error into an *Error that says where.
func jsonError(b []byte, err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		line, col := position(b, syn.Offset)
		return &Error{Msg: fmt.Sprintf("line %d, column %d: %v", line, col, syn), Err: err}
	case errors.As(err, &typ):
		line, col := position(b, typ.Offset)
		return &Error{Field: typ.Field, Msg: fmt.Sprintf("line %d, column %d: want a %s, not a JSON %s", line, col, typ.Type, typ.Value), Err: err}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &Error{Msg: "the file ends inside the object", Err: err}
	}
	return &Error{Msg: err.Error(), Err: err}
}

// position turns a byte offset into a line and column, both from 1.
func position(b []byte, off int64) (line, col int) {
	off = min(max(off, 0), int64(len(b)))
	before := b[:off]
	line = 1 + bytes.Count(before, []byte{'\n'})
	col = 1 + len(before) - (bytes.LastIndexByte(before, '\n') + 1)
	return line, col
}

// fields are the fields of each object, by JSON path.
var fields = map[string][]string{
	"":        {"display", "keypad", "printer", "sensor"},
	"printer": {"attach", "path", "cut"},
	"sensor":  {"attach", "finger", "seed", "path"},
}

// checkFields refuses an object that names a field twice, at any depth
// (encoding/json would silently keep the last), or a field of a known
// object not spelt exactly as in fields (encoding/json would match
// "Printer" to "printer").
func checkFields(b []byte) error {
	d := json.NewDecoder(bytes.NewReader(b))
	var walk func(path string, depth int) error
	walk = func(path string, depth int) error {
		if depth > 16 {
			return &Error{Msg: "nested too deep"}
		}
		tok, err := d.Token()
		if err != nil {
			return jsonError(b, err)
		}
		delim, ok := tok.(json.Delim)
		if !ok {
			return nil
		}
		switch delim {
		case '{':
			seen := map[string]bool{}
			for d.More() {
				k, err := d.Token()
				if err != nil {
					return jsonError(b, err)
				}
				key, _ := k.(string)
				field := key
				if path != "" {
					field = path + "." + key
				}
				if seen[key] {
					return &Error{Field: field, Msg: "given twice"}
				}
				if known, ok := fields[path]; ok && !slices.Contains(known, key) {
					return &Error{Msg: fmt.Sprintf("unknown field %q (want %s)", field, strings.Join(known, ", "))}
				}
				seen[key] = true
				if err := walk(field, depth+1); err != nil {
					return err
				}
			}
		case '[':
			for d.More() {
				if err := walk(path+"[]", depth+1); err != nil {
					return err
				}
			}
		}
		if _, err := d.Token(); err != nil { // the closing delimiter
			return jsonError(b, err)
		}
		return nil
	}
	return walk("", 0)
}

// Validate checks c: the display and keypad built in; a printer or
// sensor with the fields its attachment needs and none it does not.
func (c Config) Validate() error {
	if c.Display != BuiltIn {
		return &Error{Field: "display", Msg: fmt.Sprintf("%q: this device's display is built in (want %q)", c.Display, BuiltIn)}
	}
	if c.Keypad != BuiltIn {
		return &Error{Field: "keypad", Msg: fmt.Sprintf("%q: this device's keypad is built in (want %q)", c.Keypad, BuiltIn)}
	}
	p := c.Printer
	switch p.Attach {
	case None:
		if p.Path != "" || p.Cut {
			return &Error{Field: "printer", Msg: `"path" and "cut" are for a printer that is there (attach "builtin" or "external")`}
		}
	case BuiltIn, External:
		if err := checkPath("printer.path", p.Path, p.Attach); err != nil {
			return err
		}
	default:
		return attachError("printer.attach", p.Attach)
	}
	s := c.Sensor
	switch s.Attach {
	case None:
		if s.Path != "" || s.Finger != 0 || s.Seed != 0 {
			return &Error{Field: "sensor", Msg: `"finger", "seed" and "path" are for a sensor that is there`}
		}
	case BuiltIn:
		if s.Path != "" {
			return &Error{Field: "sensor.path", Msg: `the built-in sensor is simulated: give "finger" and "seed", not a path`}
		}
	case External:
		if s.Finger != 0 || s.Seed != 0 {
			return &Error{Field: "sensor", Msg: `"finger" and "seed" are for the built-in simulated sensor`}
		}
		if err := checkPath("sensor.path", s.Path, s.Attach); err != nil {
			return err
		}
	default:
		return attachError("sensor.attach", s.Attach)
	}
	return nil
}

func attachError(field string, a Attach) error {
	what := fmt.Sprintf("%q", a)
	if a == "" {
		what = "missing"
	}
	return &Error{Field: field, Msg: fmt.Sprintf("%s: want %q, %q or %q", what, None, BuiltIn, External)}
}

func checkPath(field, path string, a Attach) error {
	if path == "" {
		what := "the file it writes to"
		switch field {
		case "printer.path":
			if a == External {
				what = "its device, e.g. /dev/usb/lp0"
			}
		case "sensor.path":
			what = "the file its template is in"
		}
		return &Error{Field: field, Msg: fmt.Sprintf("missing: an %s %s needs %s", a, strings.TrimSuffix(field, ".path"), what)}
	}
	if strings.ContainsRune(path, 0) || len(path) > 4096 {
		return &Error{Field: field, Msg: "not a usable path"}
	}
	return nil
}

// OpenPrinter opens the configured printer (a *printer.Printer, which the
// caller closes); it returns a nil hal.Printer and no error when there is
// none.
func (c Config) OpenPrinter() (hal.Printer, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.Printer.Attach == None {
		return nil, nil
	}
	p, err := printer.Open(c.Printer.Path, printer.Options{Cut: c.Printer.Cut})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// OpenSensor returns the configured sensor, or nil and no error when
// there is none.
func (c Config) OpenSensor() (hal.Sensor, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	switch c.Sensor.Attach {
	case BuiltIn:
		f, err := biometric.NewFinger(c.Sensor.Finger, biometric.DefaultNoise())
		if err != nil {
			return nil, err
		}
		return biometric.NewSim(f, c.Sensor.Seed), nil
	case External:
		return biometric.File{Path: c.Sensor.Path}, nil
	}
	return nil, nil
}
