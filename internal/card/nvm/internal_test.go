package nvm

import (
	"bytes"
	"testing"
)

// FuzzDecodeRecords decodes arbitrary payloads: no panic, and a payload
// that decodes re-encodes to the same bytes.
func FuzzDecodeRecords(f *testing.F) {
	f.Add([]byte{})
	f.Add(encodeSlot(1, map[string][]byte{"a": []byte("1"), "b": nil})[slotHeaderLen : slotHeaderLen+12])
	f.Add([]byte{1, 'a', 0, 0, 0, 1, 'x', 1, 'a', 0, 0, 0, 0})
	f.Add([]byte{65})
	f.Fuzz(func(t *testing.T, p []byte) {
		recs, err := decodeRecords(p)
		if err != nil {
			return
		}
		if n := payloadLen(recs); n != len(p) {
			t.Fatalf("payloadLen(decodeRecords(p)) = %d, want %d", n, len(p))
		}
		img := encodeSlot(7, recs)
		if got := img[slotHeaderLen : len(img)-sumLen]; !bytes.Equal(got, p) {
			t.Fatalf("encodeSlot(decodeRecords(%x)) payload = %x", p, got)
		}
	})
}

func TestDecodeRecords(t *testing.T) {
	tests := []struct {
		name string
		p    []byte
		ok   bool
	}{
		{"empty", nil, true},
		{"one", []byte{1, 'a', 0, 0, 0, 1, 'x'}, true},
		{"two sorted", []byte{1, 'a', 0, 0, 0, 0, 1, 'b', 0, 0, 0, 0}, true},
		{"duplicate", []byte{1, 'a', 0, 0, 0, 0, 1, 'a', 0, 0, 0, 0}, false},
		{"unsorted", []byte{1, 'b', 0, 0, 0, 0, 1, 'a', 0, 0, 0, 0}, false},
		{"empty key", []byte{0, 0, 0, 0, 0}, false},
		{"key too long", append([]byte{65}, make([]byte, 69)...), false},
		{"key truncated", []byte{3, 'a'}, false},
		{"value truncated", []byte{1, 'a', 0, 0, 0, 2, 'x'}, false},
		{"huge value", []byte{1, 'a', 0xFF, 0xFF, 0xFF, 0xFF}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeRecords(tt.p)
			if (err == nil) != tt.ok {
				t.Errorf("decodeRecords(%x) = %v, want ok %v", tt.p, err, tt.ok)
			}
		})
	}
}

// decodeRecords parses a payload into a map. Values share p's backing
// array.
func decodeRecords(p []byte) (map[string][]byte, error) {
	keys, offs, err := parseRecords(p, 0)
	if err != nil {
		return nil, err
	}
	recs := make(map[string][]byte, len(keys))
	for i, k := range keys {
		v := p[offs[i]+recordOver+len(k) : offs[i+1]]
		recs[k] = v[:len(v):len(v)]
	}
	return recs, nil
}
