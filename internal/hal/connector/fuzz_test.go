package connector_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"cardlink/internal/hal/connector"
)

// FuzzParse: the parser never panics, refuses with a *connector.Error, and
// what it accepts is valid and survives a round trip through JSON.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"printer": {"attach": "external", "path": "/dev/usb/lp0", "cut": true}, "sensor": {"attach": "builtin", "finger": 3, "seed": 9}}`))
	f.Add([]byte(`{"sensor": {"attach": "external", "path": "f"}, "sensor": {}}`))
	f.Add([]byte(`{"display": "builtin", "keypad": "builtin", "printer": {"attach": "none"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := connector.Parse(b)
		if err != nil {
			var ce *connector.Error
			if !errors.As(err, &ce) {
				t.Fatalf("Parse(%q) = %v, not a *connector.Error", b, err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted %q, Validate refuses: %v", b, err)
		}
		out, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		c2, err := connector.Parse(out)
		if err != nil || !reflect.DeepEqual(c, c2) {
			t.Fatalf("round trip of %q through %s: %+v, %v", b, out, c2, err)
		}
	})
}
