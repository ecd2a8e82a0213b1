package pki

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	"cardlink/internal/txn"
)

// IssuedCert is one line of the issuer's index of issued card
// certificates.
type IssuedCert struct {
	CardNumber string
	Serial     *big.Int
	NotAfter   time.Time
}

// maxSerialHex is the most hex digits a certificate serial may have: 20
// octets (RFC 5280 §4.1.2.2).
const maxSerialHex = 40

// Issued returns the issuer's index of issued card certificates, oldest
// first: every certificate IssueCard returned, one entry each (a card with
// a PIV certificate has two). An issuer that never issued a card has an
// empty index.
func (iss *Issuer) Issued() ([]IssuedCert, error) {
	iss.mu.Lock()
	defer iss.mu.Unlock()
	list, _, err := iss.readIndex()
	return list, err
}

// readIndex reads and parses the index file; a missing file is an empty
// index. It also returns the file's bytes, for appending.
func (iss *Issuer) readIndex() ([]IssuedCert, []byte, error) {
	data, err := os.ReadFile(filepath.Join(iss.dir, fileIndex))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading index of issued certificates: %w", err)
	}
	list, err := parseIndex(data)
	if err != nil {
		return nil, nil, fmt.Errorf("reading %s: %w", fileIndex, err)
	}
	return list, data, nil
}

// record appends c to the index, replacing the file atomically.
func (iss *Issuer) record(c IssuedCert) error {
	if iss.dir == "" {
		return errors.New("recording issued certificate: issuer has no directory")
	}
	iss.mu.Lock()
	defer iss.mu.Unlock()
	_, data, err := iss.readIndex()
	if err != nil {
		return fmt.Errorf("recording issued certificate: %w", err)
	}
	data = appendIndexLine(bytes.Clone(data), c)
	if err := writeAtomic(filepath.Join(iss.dir, fileIndex), data, 0o644); err != nil {
		return fmt.Errorf("recording issued certificate: %w", err)
	}
	return nil
}

// The index is text, one line per certificate, fields separated by one
// space, every line ending in a newline:
//
//	<card number> <serial, upper-case hex, no leading zeros> <notAfter, RFC 3339 UTC>
//
// Parsing is strict, so that formatting a parsed index gives back the same
// bytes.
func appendIndexLine(b []byte, c IssuedCert) []byte {
	b = append(b, c.CardNumber...)
	b = append(b, ' ')
	b = append(b, strings.ToUpper(c.Serial.Text(16))...)
	b = append(b, ' ')
	b = c.NotAfter.UTC().AppendFormat(b, time.RFC3339)
	return append(b, '\n')
}

func formatIndex(list []IssuedCert) []byte {
	var b []byte
	for _, c := range list {
		b = appendIndexLine(b, c)
	}
	return b
}

// parseIndex parses the index format appendIndexLine writes.
func parseIndex(data []byte) ([]IssuedCert, error) {
	var list []IssuedCert
	for n := 1; len(data) > 0; n++ {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			return nil, fmt.Errorf("line %d: no newline at the end", n)
		}
		c, err := parseIndexLine(string(data[:i]))
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		list = append(list, c)
		data = data[i+1:]
	}
	return list, nil
}

func parseIndexLine(line string) (IssuedCert, error) {
	f := strings.Split(line, " ")
	if len(f) != 3 {
		return IssuedCert{}, fmt.Errorf("%d fields, want 3", len(f))
	}
	if err := txn.ValidCardNumber(f[0]); err != nil {
		return IssuedCert{}, err
	}
	serial, err := parseSerialHex(f[1])
	if err != nil {
		return IssuedCert{}, err
	}
	t, err := time.Parse(time.RFC3339, f[2])
	if err != nil || t.UTC().Format(time.RFC3339) != f[2] {
		return IssuedCert{}, fmt.Errorf("expiry %q: want RFC 3339 UTC time to the second", f[2])
	}
	return IssuedCert{CardNumber: f[0], Serial: serial, NotAfter: t.UTC()}, nil
}

// parseSerialHex parses a positive serial in upper-case hex without leading
// zeros.
func parseSerialHex(s string) (*big.Int, error) {
	if s == "" || len(s) > maxSerialHex || s[0] == '0' ||
		strings.TrimLeft(s, "0123456789ABCDEF") != "" {
		return nil, fmt.Errorf("serial %q: want 1 to %d upper-case hex digits without leading zeros", s, maxSerialHex)
	}
	n, ok := new(big.Int).SetString(s, 16)
	if !ok {
		return nil, fmt.Errorf("serial %q: not hex", s)
	}
	return n, nil
}

// writeAtomic replaces path with data: it writes a temporary file in the
// same directory, syncs it, renames it over path and syncs the directory,
// so that a crash leaves either the old file or the new one.
func writeAtomic(path string, data []byte, perm fs.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", filepath.Base(path), err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", filepath.Base(path), err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync() // best effort: some systems cannot sync a directory
		d.Close()
	}
	return nil
}
