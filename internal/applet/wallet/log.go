package wallet

import (
	"encoding/binary"
	"fmt"

	"cardlink/internal/card"
	"cardlink/internal/card/nvm"
	"cardlink/internal/iso7816"
	"cardlink/internal/txn"
)

// The transaction log is a cyclic file of logCapacity records (SFI 1, as
// an EMV cyclic file: record 1 is the most recent). Slot i is the NVM key
// keyLogPrefix + two decimal digits; keyLogHead holds the next slot to
// write and the number of records used.
const (
	logCapacity = 16
	logSFI      = 1
	// p2ReadBySFI is READ RECORD's P2: SFI 1 in bits 8-4, "P1 is a record
	// number" (100) in bits 3-1 (ISO/IEC 7816-4 §11.3.3, table 49).
	p2ReadBySFI = logSFI<<3 | 0x04
)

// Log record template and fields (docs/wallet-applet.md, "READ RECORD").
const (
	tagLogRecord  iso7816.Tag = 0x70
	tagLogPurpose iso7816.Tag = 0x80
	tagLogCounter iso7816.Tag = 0x82
	tagLogCVM     iso7816.Tag = 0x83
	tagLogPayload iso7816.Tag = 0x84
)

func logKey(slot int) string { return fmt.Sprintf("%s%02d", keyLogPrefix, slot) }

// logHead returns the next slot to write and the records used.
func logHead(get func(string) []byte) (next, used int) {
	h := get(keyLogHead)
	if len(h) != 2 || h[0] >= logCapacity || h[1] > logCapacity {
		return 0, 0
	}
	return int(h[0]), int(h[1])
}

// appendLog appends one record to the cyclic transaction log inside tx,
// overwriting the oldest once the log holds logCapacity records.
func appendLog(tx *nvm.Tx, kind txn.Purpose, counter uint32, cvm txn.CVM, payload []byte) {
	next, used := logHead(tx.Get)
	rec := make([]byte, 0, 16+len(payload))
	rec = iso7816.AppendTLV(rec, tagLogPurpose, []byte{byte(kind)})
	rec = iso7816.AppendTLV(rec, tagLogCounter, binary.BigEndian.AppendUint32(nil, counter))
	rec = iso7816.AppendTLV(rec, tagLogCVM, []byte{byte(cvm)})
	rec = iso7816.AppendTLV(rec, tagLogPayload, payload)
	tx.Put(logKey(next), iso7816.AppendTLV(nil, tagLogRecord, rec))
	tx.Put(keyLogHead, []byte{byte((next + 1) % logCapacity), byte(min(used+1, logCapacity))})
}

// readRecord handles READ RECORD (00 B2 n 0C): record n of the log, 1 being
// the most recent.
func readRecord(ctx *card.Context, cmd iso7816.Command) ([]byte, iso7816.SW) {
	if cmd.P2 != p2ReadBySFI || cmd.P1 == 0 {
		return nil, iso7816.SWIncorrectP1P2
	}
	if len(cmd.Data) != 0 {
		return nil, iso7816.SWWrongLength
	}
	next, used := logHead(ctx.NVM.Get)
	n := int(cmd.P1)
	if n > used {
		return nil, iso7816.SWRecordNotFound
	}
	rec := ctx.NVM.Get(logKey((next - n + logCapacity) % logCapacity))
	if rec == nil {
		return nil, iso7816.SWRecordNotFound
	}
	return rec, iso7816.SWOK
}
