package wallet

import (
	"bytes"
	"errors"
	"testing"

	"cardlink/internal/iso7816"
	"cardlink/internal/txn"
)

// itemEntry encodes one LIST ITEMS entry as the card does.
func itemEntry(info ItemInfo) []byte {
	var e []byte
	e = iso7816.AppendTLV(e, tagItemID, info.ID[:])
	e = iso7816.AppendTLV(e, tagItemKind, []byte{byte(info.Kind)})
	e = iso7816.AppendTLV(e, tagItemTitle, []byte(info.Title))
	e = iso7816.AppendTLV(e, tagItemContentLen, []byte{byte(info.ContentLen >> 8), byte(info.ContentLen)})
	return iso7816.AppendTLV(nil, tagItemEntry, e)
}

func TestParseItemList(t *testing.T) {
	a := ItemInfo{ID: [16]byte{1}, Kind: txn.ItemTicket, Title: "Concert", ContentLen: 300}
	b := ItemInfo{ID: [16]byte{2}, Kind: txn.ItemFile, Title: "Manual", ContentLen: 0}
	tests := []struct {
		name string
		in   []byte
		want []ItemInfo
		ok   bool
	}{
		{"empty store", nil, nil, true},
		{"one item", itemEntry(a), []ItemInfo{a}, true},
		{"two items", append(itemEntry(a), itemEntry(b)...), []ItemInfo{a, b}, true},
		{"wrong template tag", iso7816.AppendTLV(nil, 0xE1, nil), nil, false},
		{"missing title", iso7816.AppendTLV(nil, tagItemEntry, iso7816.AppendTLV(nil, tagItemID, make([]byte, 16))), nil, false},
		{"short id", bytes.Replace(itemEntry(a), []byte{0x81, 0x10}, []byte{0x81, 0x0F}, 1), nil, false},
		{"truncated", itemEntry(a)[:10], nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseItemList(tt.in)
			if (err == nil) != tt.ok {
				t.Fatalf("parseItemList(% X) error = %v, want ok %t", tt.in, err, tt.ok)
			}
			if err != nil && !errors.Is(err, errMalformedReply) {
				t.Errorf("parseItemList(% X) = %v, want errMalformedReply", tt.in, err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("parseItemList(% X) = %+v, want %+v", tt.in, got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("parseItemList(% X)[%d] = %+v, want %+v", tt.in, i, got[i], tt.want[i])
				}
			}
		})
	}
}

// FuzzParseItemList checks that a LIST ITEMS reply never panics the host
// and that what parses re-encodes to the same bytes.
func FuzzParseItemList(f *testing.F) {
	f.Add(itemEntry(ItemInfo{ID: [16]byte{1}, Kind: txn.ItemTicket, Title: "Concert", ContentLen: 300}))
	f.Add([]byte{})
	f.Add([]byte{0xE7, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		items, err := parseItemList(b)
		if err != nil {
			return
		}
		var enc []byte
		for _, it := range items {
			enc = append(enc, itemEntry(it)...)
		}
		if _, err := parseItemList(enc); err != nil {
			t.Fatalf("parseItemList(re-encoded %+v) = %v", items, err)
		}
	})
}
