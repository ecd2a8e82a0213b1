package connector_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"cardlink/internal/hal"
	"cardlink/internal/hal/biometric"
	"cardlink/internal/hal/connector"
	"cardlink/internal/hal/printer"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want connector.Config
	}{
		{"empty object is the default", `{}`, connector.Default()},
		{"external printer", `{"printer": {"attach": "external", "path": "/dev/usb/lp0", "cut": true}}`,
			connector.Config{Display: "builtin", Keypad: "builtin",
				Printer: connector.Printer{Attach: "external", Path: "/dev/usb/lp0", Cut: true},
				Sensor:  connector.Sensor{Attach: "builtin", Finger: 1, Seed: 1}}},
		{"built-in printer, external sensor", `{
			"display": "builtin", "keypad": "builtin",
			"printer": {"attach": "builtin", "path": "receipts.escpos"},
			"sensor": {"attach": "external", "path": "finger.bin"}
		}`,
			connector.Config{Display: "builtin", Keypad: "builtin",
				Printer: connector.Printer{Attach: "builtin", Path: "receipts.escpos"},
				Sensor:  connector.Sensor{Attach: "external", Path: "finger.bin"}}},
		{"no sensor (a section starts from zero)", `{"sensor": {"attach": "none"}}`,
			connector.Config{Display: "builtin", Keypad: "builtin",
				Printer: connector.Printer{Attach: "none"}, Sensor: connector.Sensor{Attach: "none"}}},
		{"simulated finger", `{"sensor": {"attach": "builtin", "finger": 7}}`,
			connector.Config{Display: "builtin", Keypad: "builtin",
				Printer: connector.Printer{Attach: "none"}, Sensor: connector.Sensor{Attach: "builtin", Finger: 7}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := connector.Parse([]byte(tc.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Parse = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, in string
		field    string // the *Error's field
		says     string // in the message
	}{
		{"unknown top-level field", `{"printer": {"attach": "none"}, "scanner": 1}`, "", `unknown field "scanner"`},
		{"unknown printer field", `{"printer": {"attach": "none", "paper": "58mm"}}`, "", `unknown field "printer.paper" (want attach, path, cut)`},
		{"wrong case", `{"Printer": {"attach": "none"}}`, "", `unknown field "Printer"`},
		{"wrong case inside", `{"printer": {"Attach": "none"}}`, "", `unknown field "printer.Attach"`},
		{"duplicate field", `{"printer": {"attach": "none"}, "printer": {"attach": "builtin", "path": "x"}}`, "printer", "twice"},
		{"duplicate nested field", `{"sensor": {"attach": "builtin", "attach": "none"}}`, "sensor.attach", "twice"},
		{"syntax error", "{\n  \"printer\": {\"attach\": \"none\",}\n}", "", "line 2, column"},
		{"wrong type", `{"sensor": {"attach": "builtin", "finger": "one"}}`, "sensor.finger", "want a uint64"},
		{"negative finger", `{"sensor": {"attach": "builtin", "finger": -1}}`, "sensor.finger", "want a uint64"},
		{"not an object", `["printer"]`, "", "JSON object"},
		{"null", `null`, "", "JSON object"},
		{"empty", ``, "", "JSON object"},
		{"trailing data", `{} {}`, "", "after top-level value"},
		{"truncated", `{"printer": {`, "", ""},
		{"external display", `{"display": "external"}`, "display", "built in"},
		{"no keypad", `{"keypad": "none"}`, "keypad", "built in"},
		{"printer attach unknown", `{"printer": {"attach": "usb"}}`, "printer.attach", `"usb": want "none", "builtin" or "external"`},
		{"printer attach missing", `{"printer": {"path": "x"}}`, "printer.attach", "missing"},
		{"external printer without path", `{"printer": {"attach": "external"}}`, "printer.path", "/dev/usb/lp0"},
		{"built-in printer without path", `{"printer": {"attach": "builtin"}}`, "printer.path", "file it writes to"},
		{"no printer with a path", `{"printer": {"attach": "none", "path": "x"}}`, "printer", "path"},
		{"external sensor without path", `{"sensor": {"attach": "external"}}`, "sensor.path", "template"},
		{"external sensor with a finger", `{"sensor": {"attach": "external", "path": "f", "finger": 2}}`, "sensor", "simulated"},
		{"built-in sensor with a path", `{"sensor": {"attach": "builtin", "path": "f"}}`, "sensor.path", "simulated"},
		{"path with NUL", `{"printer": {"attach": "builtin", "path": "a\u0000b"}}`, "printer.path", "path"},
		{"too big", `{"x": "` + strings.Repeat("a", connector.MaxSize) + `"}`, "", "more than"},
		{"too deep", `{"printer": ` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}`, "", "deep"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := connector.Parse([]byte(tc.in))
			var ce *connector.Error
			if !errors.As(err, &ce) {
				t.Fatalf("Parse(%q) = %v, want a *connector.Error", tc.in, err)
			}
			if ce.Field != tc.field || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("Parse(%.60q) = field %q, %q; want field %q saying %q", tc.in, ce.Field, err, tc.field, tc.says)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q spans lines", err)
			}
		})
	}
}

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	tmpl := make([]byte, biometric.TemplateLen)
	tmpl[0] = 0xFF
	tmplPath := filepath.Join(dir, "finger.bin")
	if err := os.WriteFile(tmplPath, tmpl, 0o600); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "device.json")
	receipts := filepath.Join(dir, "receipts.escpos")
	cfg := `{"printer": {"attach": "builtin", "path": ` + quote(receipts) + `, "cut": true},
		"sensor": {"attach": "external", "path": ` + quote(tmplPath) + `}}`
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := connector.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	p, err := c.OpenPrinter()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Print(ctx, hal.Receipt{Title: "Paid"}); err != nil {
		t.Fatal(err)
	}
	if err := p.(*printer.Printer).Close(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(receipts)
	if doc, err := printer.Decode(b); err != nil || doc.Cuts != 1 || doc.Lines[0].Text != "Paid" {
		t.Errorf("receipt file decodes to %+v, %v", doc, err)
	}
	s, err := c.OpenSensor()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.Capture(ctx); err != nil || got[0] != 0xFF {
		t.Errorf("external sensor Capture = %x, %v", got, err)
	}

	d := connector.Default()
	if p, err := d.OpenPrinter(); p != nil || err != nil {
		t.Errorf("default OpenPrinter = %v, %v; want no printer", p, err)
	}
	s, err = d.OpenSensor()
	if _, ok := s.(*biometric.Sim); !ok || err != nil {
		t.Errorf("default OpenSensor = %T, %v; want the simulated sensor", s, err)
	}
	if _, err := connector.Load(filepath.Join(dir, "missing.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v", err)
	}
	if err := os.WriteFile(cfgPath, []byte(`{"keypad": "none"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := connector.Load(cfgPath); err == nil || !strings.Contains(err.Error(), cfgPath) {
		t.Errorf("Load(bad) = %v, want the path in the error", err)
	}
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
