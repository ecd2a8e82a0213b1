package pki

import (
	"bytes"
	"strings"
	"testing"
)

func TestDeviceID(t *testing.T) {
	seq := make([]byte, 32)
	for i := range seq {
		seq[i] = byte(i)
	}
	// Computed independently: base32(sha256(key)[:10]).lower().
	tests := []struct {
		name string
		pub  []byte
		want string
	}{
		{"zero key", make([]byte, 32), "mzuhvlpymk6xo3ep"},
		{"00..1F", seq, "mmg42klgyqzwneis"},
	}
	for _, tt := range tests {
		if got := DeviceID(tt.pub); got != tt.want {
			t.Errorf("DeviceID(%s) = %q, want %q", tt.name, got, tt.want)
		}
	}
	other := bytes.Clone(seq)
	other[31] ^= 1
	if a, b := DeviceID(seq), DeviceID(other); a == b {
		t.Errorf("DeviceID of keys one bit apart = %q for both", a)
	}
	id := DeviceID(seq)
	if len(id) != 16 || strings.Trim(id, "abcdefghijklmnopqrstuvwxyz234567") != "" {
		t.Errorf("DeviceID() = %q, want 16 lower-case base32 characters", id)
	}
}
