package wallet

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"cardlink/internal/iso7816"
	"cardlink/internal/txn"
)

// E-goods instructions and data objects (docs/wallet-applet.md, "E-goods
// store").
const (
	insStoreItem  = 0xE2
	insListItems  = 0xE4
	insReadItem   = 0xE6
	insDeleteItem = 0xE8

	tagItemEntry      iso7816.Tag = 0xE7
	tagItemID         iso7816.Tag = 0x81
	tagItemKind       iso7816.Tag = 0x82
	tagItemTitle      iso7816.Tag = 0x83
	tagItemContentLen iso7816.Tag = 0x85

	swItemExists iso7816.SW = 0x6A89
)

// ErrItemExists means STORE ITEM found an item with the same id in the
// store (status 6A89). The error also unwraps to the *iso7816.StatusError.
var ErrItemExists = errors.New("item already stored")

// ItemInfo describes one stored e-good, as LIST ITEMS reports it.
type ItemInfo struct {
	ID         [16]byte
	Kind       txn.ItemKind
	Title      string
	ContentLen int // bytes of content; READ ITEM returns them
}

// StoreItem sends STORE ITEM with signed (the issuer's E6 template, as made
// by txn.Item.EncodeSigned); data over 255 bytes goes as a command chain.
// Refusals: ErrItemExists, and *iso7816.StatusError unwrapping to
// ErrWrongData (malformed or another card's item), ErrSecurityStatus (bad
// issuer signature) or ErrNoSpace (16 items, or 8192 bytes, stored).
func (c *Client) StoreItem(ctx context.Context, signed []byte) error {
	_, err := c.exchange(ctx, claProprietary, insStoreItem, 0, 0, signed, 0)
	if se := (*iso7816.StatusError)(nil); errors.As(err, &se) && se.SW == swItemExists {
		return fmt.Errorf("storing item: %w (%w)", ErrItemExists, err)
	}
	if err != nil {
		return fmt.Errorf("storing item: %w", err)
	}
	return nil
}

// Items lists the stored e-goods in the order of their ids.
func (c *Client) Items(ctx context.Context) ([]ItemInfo, error) {
	resp, err := c.exchange(ctx, claProprietary, insListItems, 0, 0, nil, 256)
	if err != nil {
		return nil, fmt.Errorf("listing items: %w", err)
	}
	items, err := parseItemList(resp)
	if err != nil {
		return nil, fmt.Errorf("listing items: %w", err)
	}
	return items, nil
}

// parseItemList decodes a LIST ITEMS response.
func parseItemList(b []byte) ([]ItemInfo, error) {
	if len(b) == 0 {
		return nil, nil
	}
	list, err := iso7816.ParseTLV(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errMalformedReply, err)
	}
	items := make([]ItemInfo, 0, len(list))
	for _, e := range list {
		if e.Tag != tagItemEntry {
			return nil, fmt.Errorf("%w: tag %X in item list", errMalformedReply, uint32(e.Tag))
		}
		var info ItemInfo
		f, err := fieldsOf(e.Children, tagItemID, tagItemKind, tagItemTitle, tagItemContentLen)
		if err != nil {
			return nil, err
		}
		if len(f[0]) != 16 || len(f[1]) != 1 || len(f[3]) != 2 {
			return nil, fmt.Errorf("%w: item entry field sizes", errMalformedReply)
		}
		copy(info.ID[:], f[0])
		info.Kind = txn.ItemKind(f[1][0])
		info.Title = string(f[2])
		info.ContentLen = int(binary.BigEndian.Uint16(f[3]))
		items = append(items, info)
	}
	return items, nil
}

// fieldsOf returns the values of the wanted tags in list, all required.
func fieldsOf(list []iso7816.TLV, want ...iso7816.Tag) ([][]byte, error) {
	out := make([][]byte, len(want))
	for i, tag := range want {
		o, ok := iso7816.FindTLV(list, tag)
		if !ok {
			return nil, fmt.Errorf("%w: no tag %X", errMalformedReply, uint32(tag))
		}
		out[i] = o.Value
	}
	return out, nil
}

// ReadItem reads the stored signed item with the given id and returns it
// with the issuer's signature, for the caller to verify against the
// issuer's operations key. An unknown id is a *iso7816.StatusError
// unwrapping to iso7816.ErrNotFound.
func (c *Client) ReadItem(ctx context.Context, id [16]byte) (txn.Item, []byte, error) {
	resp, err := c.exchange(ctx, claProprietary, insReadItem, 0, 0, id[:], 256)
	if err != nil {
		return txn.Item{}, nil, fmt.Errorf("reading item %x: %w", id, err)
	}
	it, sig, err := txn.ParseSignedItem(resp)
	if err != nil {
		return txn.Item{}, nil, fmt.Errorf("reading item %x: %w: %w", id, errMalformedReply, err)
	}
	if !bytes.Equal(it.ID[:], id[:]) {
		return txn.Item{}, nil, fmt.Errorf("reading item %x: %w: card returned item %x", id, errMalformedReply, it.ID)
	}
	return it, sig, nil
}

// DeleteItem removes the item with the given id. The holder must have been
// verified in this card session (ErrSecurityStatus otherwise); an unknown
// id unwraps to iso7816.ErrNotFound.
func (c *Client) DeleteItem(ctx context.Context, id [16]byte) error {
	if _, err := c.exchange(ctx, claProprietary, insDeleteItem, 0, 0, id[:], 0); err != nil {
		return fmt.Errorf("deleting item %x: %w", id, err)
	}
	return nil
}
