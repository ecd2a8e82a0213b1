package purchase

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"time"
)

// idTimeBits is the width of the millisecond timestamp that starts a
// transaction id; the other 80 bits are random.
const idTimeBits = 48

// NewID returns a new purchase ID: "pur_" and the 32 hex digits of a
// 16-byte transaction id that starts with now in milliseconds since the
// Unix epoch, big-endian in 48 bits, followed by 80 bits from r (the
// layout of a UUIDv7, RFC 9562 section 5.7, without its version and
// variant bits). IDs made later sort after earlier ones (those of one
// millisecond in random order), so the store's indexes on the ID and on
// the ledger key TransferKey(id) grow at their end instead of touching a
// random page each; the 80 random bits keep an ID unguessable.
//
// The error is r's, or one for a time before 1970 or after the year
// 10889. NewID is safe for concurrent use if r is.
func NewID(now time.Time, r io.Reader) (string, error) {
	ms := now.UnixMilli()
	if ms < 0 || ms >= 1<<idTimeBits {
		return "", fmt.Errorf("making purchase id: time %v out of range", now)
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(ms)<<(64-idTimeBits))
	if _, err := io.ReadFull(r, b[idTimeBits/8:]); err != nil {
		return "", fmt.Errorf("making purchase id: %w", err)
	}
	return idPrefix + hex.EncodeToString(b[:]), nil
}
