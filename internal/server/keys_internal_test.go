package server

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/flynn/noise"
)

func TestKeyUpdate(t *testing.T) {
	keys := make([]noise.DHKey, 10)
	pubs := make([][]byte, len(keys))
	for i := range keys {
		pubs[i] = bytes.Repeat([]byte{byte(i + 1)}, 32)
		keys[i] = noise.DHKey{Public: pubs[i]}
	}
	tests := []struct {
		name string
		keys []noise.DHKey
		used []byte
		want [][]byte // nil: no update
	}{
		{"one key", keys[:1], pubs[0], nil},
		{"newest of two", keys[:2], pubs[0], nil},
		{"older of two", keys[:2], pubs[1], pubs[:2]},
		{"middle of three", keys[:3], pubs[1], pubs[:2]},
		{"oldest of three", keys[:3], pubs[2], pubs[:3]},
		{"eighth of eight", keys[:8], pubs[7], pubs[:8]},
		{"ninth of nine", keys[:9], pubs[8], nil},
		{"unknown key", keys[:2], pubs[9], nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := keyUpdate(tt.keys, tt.used)
			if tt.want == nil {
				if u != nil {
					t.Fatalf("keyUpdate(%d keys, %x) = %x, want none", len(tt.keys), tt.used[:1], u.Keys)
				}
				return
			}
			if u == nil || !reflect.DeepEqual(u.Keys, tt.want) {
				t.Fatalf("keyUpdate(%d keys, %x) = %+v, want %x", len(tt.keys), tt.used[:1], u, tt.want)
			}
		})
	}
}
