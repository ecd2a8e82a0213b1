package device

import (
	"errors"
	"fmt"

	"cardlink/internal/card/nvm"
	"cardlink/internal/protocol"
	"cardlink/internal/txn"
)

// keyPending is the memory record of an interrupted purchase.
const keyPending = "device/pending"

// pendingTxn is a purchase a card removal or a link drop interrupted: the
// device settles it with the server at the next chance (the same card in
// the reader, the server reachable). The controller keeps it in its
// Memory, when it has one, so that a restart (a shutdown for power, a
// power cut) does not forget it.
type pendingTxn struct {
	card      string
	reference string   // "" for a purchase pushed to the card
	id        [16]byte // the offered transaction
	// approval is what the card signed; nil when it did not sign (the
	// device then declines the purchase).
	approval *protocol.TransactionApproval
	reason   string // why it was interrupted
}

// pendingVersion is the first byte of the record.
const pendingVersion = 1

// encode writes p as a memory record: version, card number (16 digits),
// reference length and reference, transaction id, reason length and
// reason, then the approval as a protocol message (absent when the card
// did not sign).
func (p *pendingTxn) encode() ([]byte, error) {
	if txn.ValidCardNumber(p.card) != nil || len(p.reference) > protocol.ReferenceLen || len(p.reason) > 255 {
		return nil, errors.New("pending purchase: bad card number, reference or reason")
	}
	b := []byte{pendingVersion}
	b = append(b, p.card...)
	b = append(b, byte(len(p.reference)))
	b = append(b, p.reference...)
	b = append(b, p.id[:]...)
	b = append(b, byte(len(p.reason)))
	b = append(b, p.reason...)
	if p.approval != nil {
		a, err := protocol.Encode(p.approval)
		if err != nil {
			return nil, fmt.Errorf("pending purchase: %w", err)
		}
		b = append(b, a...)
	}
	return b, nil
}

// parsePending reads a record encode wrote.
func parsePending(b []byte) (*pendingTxn, error) {
	bad := errors.New("pending purchase: malformed record")
	if len(b) < 1+16+1 || b[0] != pendingVersion {
		return nil, bad
	}
	p := &pendingTxn{card: string(b[1:17])}
	if txn.ValidCardNumber(p.card) != nil {
		return nil, bad
	}
	b = b[17:]
	n := int(b[0])
	if n > protocol.ReferenceLen || len(b) < 1+n+16+1 {
		return nil, bad
	}
	p.reference = string(b[1 : 1+n])
	b = b[1+n:]
	copy(p.id[:], b[:16])
	b = b[16:]
	n = int(b[0])
	if len(b) < 1+n {
		return nil, bad
	}
	p.reason = string(b[1 : 1+n])
	b = b[1+n:]
	if len(b) == 0 {
		return p, nil
	}
	m, err := protocol.Decode(b)
	if err != nil {
		return nil, fmt.Errorf("pending purchase: %w", err)
	}
	a, ok := m.(*protocol.TransactionApproval)
	if !ok || len(a.PINBlock) != 0 {
		return nil, bad
	}
	p.approval = a
	return p, nil
}

// setPending stores p (nil clears it), in one atomic update.
func (m *Memory) setPending(p *pendingTxn) error {
	var rec []byte
	if p != nil {
		var err error
		if rec, err = p.encode(); err != nil {
			return err
		}
	}
	err := m.mem.Update(func(tx *nvm.Tx) error {
		if rec == nil {
			tx.Delete(keyPending)
		} else {
			tx.Put(keyPending, rec)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("storing the pending purchase: %w", err)
	}
	return nil
}

// pending reads the stored interrupted purchase; nil when there is none.
func (m *Memory) pending() (*pendingTxn, error) {
	rec := m.mem.Get(keyPending)
	if rec == nil {
		return nil, nil
	}
	return parsePending(rec)
}
