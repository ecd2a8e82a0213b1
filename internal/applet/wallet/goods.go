package wallet

import (
	"encoding/binary"
	"encoding/hex"

	"cardlink/internal/card"
	"cardlink/internal/card/nvm"
	"cardlink/internal/iso7816"
	"cardlink/internal/txn"
)

// The e-goods store (docs/wallet-applet.md, "E-goods store"): one NVM
// record per item under keyItemPrefix + 32 lower-case hex digits of its id,
// holding the issuer-signed item encoding (template E6) exactly as READ ITEM
// returns it.
const (
	keyItemPrefix = "wallet/item/"
	maxItems      = 16   // items in the store
	maxItemBytes  = 8192 // sum of the stored encodings' lengths
	itemIDLen     = 16
)

// E-goods data objects (docs/wallet-applet.md, tag table).
const (
	tagItemCount iso7816.Tag = 0xDF40 // 1 byte
	tagItemFree  iso7816.Tag = 0xDF41 // 2 bytes
	tagItemEntry iso7816.Tag = 0xE7   // LIST ITEMS: one template per item

	// Inside an E7 template (same numbers as the fields of txn's item
	// template E4).
	tagItemID         iso7816.Tag = 0x81 // 16 bytes
	tagItemKind       iso7816.Tag = 0x82 // 1 byte, txn.ItemKind
	tagItemTitle      iso7816.Tag = 0x83 // 1..40 bytes UTF-8
	tagItemContentLen iso7816.Tag = 0x85 // 2 bytes, content length
)

func itemKey(id []byte) string { return keyItemPrefix + hex.EncodeToString(id) }

// goodsUsage returns the number of stored items and the bytes their
// encodings take, as seen through keys and get.
func goodsUsage(keys []string, get func(string) []byte) (count, used int) {
	for _, k := range keys {
		count++
		used += len(get(k))
	}
	return count, used
}

// storeItem handles STORE ITEM (80 E2 00 00, data = E6 signed item; over 255
// bytes it comes chained or in extended length, joined by the card OS).
//
// Status words: 6A80 malformed or another card's item; 6982 bad issuer
// signature; 6A89 an item with this id is already stored; 6A84 the store
// holds 16 items or the item would take it over 8192 bytes (or NVM is full);
// 6985 not operational; 6581 NVM failure. No counter, log or signature: an
// item is the issuer's, not a holder's approval.
func storeItem(ctx *card.Context, cmd iso7816.Command) ([]byte, iso7816.SW) {
	if cmd.P1 != 0 || cmd.P2 != 0 {
		return nil, iso7816.SWIncorrectP1P2
	}
	it, sig, err := txn.ParseSignedItem(cmd.Data)
	if err != nil {
		return nil, iso7816.SWWrongData
	}
	if !txn.VerifyItem(opsKey(ctx), &it, sig) {
		return nil, iso7816.SWSecurityStatus
	}
	if it.CardNumber != cardNumber(ctx) {
		return nil, iso7816.SWWrongData
	}
	enc := it.EncodeSigned(sig)
	key := itemKey(it.ID[:])
	// The card serialises commands, so the keys cannot change before the
	// transaction starts (and nvm.Tx cannot list keys itself).
	keys := ctx.NVM.Keys(keyItemPrefix)
	err = ctx.NVM.Update(func(tx *nvm.Tx) error {
		if tx.Get(key) != nil {
			return refusal(swItemExists)
		}
		count, used := goodsUsage(keys, tx.Get)
		if count >= maxItems || len(enc) > maxItemBytes-used {
			return refusal(iso7816.SWNoSpace)
		}
		tx.Put(key, enc)
		return nil
	})
	if err != nil {
		return nil, refusalSW(err)
	}
	return nil, iso7816.SWOK
}

// swItemExists is 6A89 ("file already exists"), STORE ITEM's answer to an
// id already in the store.
const swItemExists iso7816.SW = 0x6A89

// listItems handles LIST ITEMS (80 E4 00 00): one E7 template per item in
// the order of their ids, each holding 81 id, 82 kind, 83 title and 85
// content length. An empty store answers 9000 with no data.
func listItems(ctx *card.Context, cmd iso7816.Command) ([]byte, iso7816.SW) {
	if cmd.P1 != 0 || cmd.P2 != 0 {
		return nil, iso7816.SWIncorrectP1P2
	}
	if len(cmd.Data) != 0 {
		return nil, iso7816.SWWrongLength
	}
	var resp []byte
	for _, k := range ctx.NVM.Keys(keyItemPrefix) {
		it, _, err := txn.ParseSignedItem(ctx.NVM.Get(k))
		if err != nil {
			// Only STORE ITEM writes here, after parsing: a record that
			// does not parse is a memory failure.
			return nil, iso7816.SWMemoryFailure
		}
		var e []byte
		e = iso7816.AppendTLV(e, tagItemID, it.ID[:])
		e = iso7816.AppendTLV(e, tagItemKind, []byte{byte(it.Kind)})
		e = iso7816.AppendTLV(e, tagItemTitle, []byte(it.Title))
		e = iso7816.AppendTLV(e, tagItemContentLen, binary.BigEndian.AppendUint16(nil, uint16(len(it.Content))))
		resp = iso7816.AppendTLV(resp, tagItemEntry, e)
	}
	return resp, iso7816.SWOK
}

// readItem handles READ ITEM (80 E6 00 00, data = 16-byte id): the stored
// E6 signed item, so that the device can check the issuer's signature
// itself. 6700 for an id that is not 16 bytes, 6A88 for an unknown id.
func readItem(ctx *card.Context, cmd iso7816.Command) ([]byte, iso7816.SW) {
	if cmd.P1 != 0 || cmd.P2 != 0 {
		return nil, iso7816.SWIncorrectP1P2
	}
	if len(cmd.Data) != itemIDLen {
		return nil, iso7816.SWWrongLength
	}
	b := ctx.NVM.Get(itemKey(cmd.Data))
	if b == nil {
		return nil, iso7816.SWRefDataNotFound
	}
	return b, iso7816.SWOK
}

// deleteItem handles DELETE ITEM (80 E8 00 00, data = 16-byte id). The
// holder must have been verified in this session (holderVerified; a
// signature consuming the verification does not matter): else 6982. 6700
// for an id that is not 16 bytes, 6A88 for an unknown id.
func deleteItem(ctx *card.Context, cmd iso7816.Command) ([]byte, iso7816.SW) {
	if cmd.P1 != 0 || cmd.P2 != 0 {
		return nil, iso7816.SWIncorrectP1P2
	}
	if len(cmd.Data) != itemIDLen {
		return nil, iso7816.SWWrongLength
	}
	if !holderVerified(ctx) {
		return nil, iso7816.SWSecurityStatus
	}
	key := itemKey(cmd.Data)
	err := ctx.NVM.Update(func(tx *nvm.Tx) error {
		if tx.Get(key) == nil {
			return refusal(iso7816.SWRefDataNotFound)
		}
		tx.Delete(key)
		return nil
	})
	if err != nil {
		return nil, refusalSW(err)
	}
	return nil, iso7816.SWOK
}

// goodsData answers GET DATA for the e-goods store's tags: DF40 item count
// (1 byte) and DF41 free item bytes (2 bytes, 8192 minus the stored
// encodings' lengths). The value is returned without tag and length; ok is
// false for a tag that is not the store's.
func goodsData(ctx *card.Context, tag iso7816.Tag) (data []byte, ok bool) {
	switch tag {
	case tagItemCount, tagItemFree:
	default:
		return nil, false
	}
	count, used := goodsUsage(ctx.NVM.Keys(keyItemPrefix), ctx.NVM.Get)
	if tag == tagItemCount {
		return []byte{byte(count)}, true
	}
	return binary.BigEndian.AppendUint16(nil, uint16(max(maxItemBytes-used, 0))), true
}
