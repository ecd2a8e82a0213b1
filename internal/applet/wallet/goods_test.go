package wallet_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"cardlink/internal/applet/wallet/wallettest"
	"cardlink/internal/iso7816"
	"cardlink/internal/txn"
	"cardlink/internal/wallet"
)

// E-goods commands (docs/wallet-applet.md, "E-goods store").
const (
	insStoreItem  = 0xE2
	insListItems  = 0xE4
	insReadItem   = 0xE6
	insDeleteItem = 0xE8

	maxItems     = 16
	maxItemBytes = 8192
)

// item returns an item for env's card with id n and content of size bytes.
func item(env *wallettest.Env, n byte, size int) *txn.Item {
	it := &txn.Item{
		CardNumber: env.CardNumber,
		Kind:       txn.ItemTicket,
		Title:      fmt.Sprintf("Ticket %d", n),
		Content:    bytes.Repeat([]byte{n}, size),
	}
	it.ID[0], it.ID[15] = 0x1D, n
	return it
}

func mustStore(t testing.TB, env *wallettest.Env, it *txn.Item) []byte {
	t.Helper()
	signed := env.SignItem(it)
	if err := env.Client.StoreItem(context.Background(), signed); err != nil {
		t.Fatalf("StoreItem(%x, %d bytes) = %v", it.ID, len(signed), err)
	}
	return signed
}

// goodsState reads DF40 and DF41.
func goodsState(t testing.TB, env *wallettest.Env) (count, free int) {
	t.Helper()
	c, err := env.Client.GetData(context.Background(), 0xDF40)
	if err != nil || len(c) != 1 {
		t.Fatalf("GetData(DF40) = % X, %v, want 1 byte", c, err)
	}
	f, err := env.Client.GetData(context.Background(), 0xDF41)
	if err != nil || len(f) != 2 {
		t.Fatalf("GetData(DF41) = % X, %v, want 2 bytes", f, err)
	}
	return int(c[0]), int(be(f))
}

func TestGoodsLifecycle(t *testing.T) {
	env := wallettest.New(t, wallettest.Options{})
	ctx := context.Background()

	items, err := env.Client.Items(ctx)
	if err != nil || len(items) != 0 {
		t.Fatalf("Items() on a new card = %v, %v, want none", items, err)
	}
	if resp, sw := env.Transmit(t, iso7816.Command{CLA: claProp, INS: insListItems, Ne: 256}); sw != iso7816.SWOK || len(resp) != 0 {
		t.Errorf("LIST ITEMS on an empty store = % X %v, want no data, 9000", resp, sw)
	}
	if c, f := goodsState(t, env); c != 0 || f != maxItemBytes {
		t.Errorf("empty store: count %d free %d, want 0 and %d", c, f, maxItemBytes)
	}

	small, big := item(env, 2, 10), item(env, 1, 1024)
	big.Kind, big.Title = txn.ItemFile, "A file of one KiB"
	sSmall, sBig := mustStore(t, env, small), mustStore(t, env, big)
	if len(sBig) <= 255 {
		t.Fatalf("big item is %d bytes, want over 255 (chained)", len(sBig))
	}
	if c, f := goodsState(t, env); c != 2 || f != maxItemBytes-len(sSmall)-len(sBig) {
		t.Errorf("after two items: count %d free %d, want 2 and %d", c, f, maxItemBytes-len(sSmall)-len(sBig))
	}

	items, err = env.Client.Items(ctx)
	want := []wallet.ItemInfo{ // in id order
		{ID: big.ID, Kind: txn.ItemFile, Title: big.Title, ContentLen: 1024},
		{ID: small.ID, Kind: txn.ItemTicket, Title: small.Title, ContentLen: 10},
	}
	if err != nil || fmt.Sprint(items) != fmt.Sprint(want) {
		t.Errorf("Items() = %+v, %v, want %+v", items, err, want)
	}

	for _, it := range []*txn.Item{small, big} {
		got, sig, err := env.Client.ReadItem(ctx, it.ID)
		if err != nil {
			t.Fatalf("ReadItem(%x) = %v", it.ID, err)
		}
		if !bytes.Equal(got.Bytes(), it.Bytes()) {
			t.Errorf("ReadItem(%x) = %+v, want %+v", it.ID, got, it)
		}
		if !txn.VerifyItem(&env.OpsKey.PublicKey, &got, sig) {
			t.Errorf("ReadItem(%x): issuer signature does not verify", it.ID)
		}
	}
	raw, sw := readItemRaw(t, env, big.ID[:])
	if sw != iso7816.SWOK || !bytes.Equal(raw, sBig) {
		t.Errorf("READ ITEM (raw, GET RESPONSE) = %d bytes %v, want the %d signed bytes stored", len(raw), sw, len(sBig))
	}

	// Delete needs the holder verified in this session.
	if err := env.Client.DeleteItem(ctx, small.ID); !errors.Is(err, iso7816.ErrSecurityStatus) {
		t.Errorf("DeleteItem without PIN = %v, want ErrSecurityStatus", err)
	}
	mustVerify(t, env)
	tb, _ := env.Transaction(1, 1).Encode()
	if _, err := env.Client.SignTransaction(ctx, tb, false); err != nil { // consumes the CVM, not the session
		t.Fatalf("SignTransaction() = %v", err)
	}
	if err := env.Client.DeleteItem(ctx, small.ID); err != nil {
		t.Errorf("DeleteItem after PIN = %v", err)
	}
	if err := env.Client.DeleteItem(ctx, small.ID); !errors.Is(err, iso7816.ErrNotFound) {
		t.Errorf("DeleteItem(deleted) = %v, want ErrNotFound", err)
	}
	if _, _, err := env.Client.ReadItem(ctx, small.ID); !errors.Is(err, iso7816.ErrNotFound) {
		t.Errorf("ReadItem(deleted) = %v, want ErrNotFound", err)
	}
	if c, f := goodsState(t, env); c != 1 || f != maxItemBytes-len(sBig) {
		t.Errorf("after delete: count %d free %d, want 1 and %d", c, f, maxItemBytes-len(sBig))
	}
	// The id is free again.
	mustStore(t, env, small)

	// A power cycle ends the session's verification.
	env.Reopen(t)
	if err := env.Client.DeleteItem(ctx, small.ID); !errors.Is(err, iso7816.ErrSecurityStatus) {
		t.Errorf("DeleteItem after power cycle = %v, want ErrSecurityStatus", err)
	}
	if items, err := env.Client.Items(ctx); err != nil || len(items) != 2 {
		t.Errorf("Items() after power cycle = %v, %v, want 2 items", items, err)
	}
}

// readItemRaw sends READ ITEM and follows 61xx by hand.
func readItemRaw(t *testing.T, env *wallettest.Env, id []byte) ([]byte, iso7816.SW) {
	t.Helper()
	data, sw := env.Transmit(t, iso7816.Command{CLA: claProp, INS: insReadItem, Data: id, Ne: 256})
	for sw.SW1() == 0x61 {
		ne := int(sw.SW2())
		if ne == 0 {
			ne = 256
		}
		var more []byte
		more, sw = env.Transmit(t, iso7816.Command{CLA: 0x00, INS: 0xC0, Ne: ne})
		data = append(data, more...)
	}
	return data, sw
}

func TestStoreItemRefused(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, env *wallettest.Env)
		data  func(t *testing.T, env *wallettest.Env) []byte
		p1p2  uint16
		want  iso7816.SW
	}{
		{
			name:  "duplicate id",
			setup: func(t *testing.T, env *wallettest.Env) { mustStore(t, env, item(env, 1, 5)) },
			data:  func(t *testing.T, env *wallettest.Env) []byte { return env.SignItem(item(env, 1, 6)) },
			want:  0x6A89,
		},
		{
			name:  "same item twice",
			setup: func(t *testing.T, env *wallettest.Env) { mustStore(t, env, item(env, 1, 5)) },
			data:  func(t *testing.T, env *wallettest.Env) []byte { return env.SignItem(item(env, 1, 5)) },
			want:  0x6A89,
		},
		{
			name: "bad signature",
			data: func(t *testing.T, env *wallettest.Env) []byte {
				it := item(env, 1, 5)
				return it.EncodeSigned(otherSig(t, it.Bytes()))
			},
			want: iso7816.SWSecurityStatus,
		},
		{
			name: "signature over another item",
			data: func(t *testing.T, env *wallettest.Env) []byte {
				_, sig, err := txn.ParseSignedItem(env.SignItem(item(env, 1, 5)))
				if err != nil {
					t.Fatal(err)
				}
				return item(env, 1, 6).EncodeSigned(sig)
			},
			want: iso7816.SWSecurityStatus,
		},
		{
			name: "another card's item",
			data: func(t *testing.T, env *wallettest.Env) []byte {
				it := item(env, 1, 5)
				it.CardNumber = otherCard
				return env.SignItem(it)
			},
			want: iso7816.SWWrongData,
		},
		{
			name: "full: 16 items",
			setup: func(t *testing.T, env *wallettest.Env) {
				for n := range maxItems {
					mustStore(t, env, item(env, byte(100+n), 0))
				}
			},
			data: func(t *testing.T, env *wallettest.Env) []byte { return env.SignItem(item(env, 1, 0)) },
			want: iso7816.SWNoSpace,
		},
		{
			name: "full: 8192 bytes",
			setup: func(t *testing.T, env *wallettest.Env) {
				for n := range 7 { // 7 items of about 1.1 KiB
					mustStore(t, env, item(env, byte(100+n), 1024))
				}
			},
			data: func(t *testing.T, env *wallettest.Env) []byte {
				signed := env.SignItem(item(env, 1, 1024))
				c, f := goodsState(t, env)
				if c >= maxItems || f >= len(signed) {
					t.Fatalf("store holds %d items, %d bytes free; want too little room for %d bytes", c, f, len(signed))
				}
				return signed
			},
			want: iso7816.SWNoSpace,
		},
		{name: "malformed", data: func(t *testing.T, env *wallettest.Env) []byte { return []byte{0xE6, 0x00} }, want: iso7816.SWWrongData},
		{name: "empty", data: func(t *testing.T, env *wallettest.Env) []byte { return nil }, want: iso7816.SWWrongData},
		{
			name: "trailing byte",
			data: func(t *testing.T, env *wallettest.Env) []byte { return append(env.SignItem(item(env, 1, 5)), 0) },
			want: iso7816.SWWrongData,
		},
		{
			name: "P1-P2 not zero",
			data: func(t *testing.T, env *wallettest.Env) []byte { return env.SignItem(item(env, 1, 5)) },
			p1p2: 0x0001,
			want: iso7816.SWIncorrectP1P2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := wallettest.New(t, wallettest.Options{})
			if tt.setup != nil {
				tt.setup(t, env)
			}
			data := tt.data(t, env)
			items, err := env.Client.Items(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			c0, f0 := goodsState(t, env)
			_, sw := env.Transmit(t, iso7816.Command{CLA: claProp, INS: insStoreItem, P1: byte(tt.p1p2 >> 8), P2: byte(tt.p1p2), Data: data, Extended: len(data) > 255})
			if sw != tt.want {
				t.Fatalf("STORE ITEM = %v, want %v", sw, tt.want)
			}
			after, err := env.Client.Items(context.Background())
			if c, f := goodsState(t, env); err != nil || c != c0 || f != f0 || fmt.Sprint(after) != fmt.Sprint(items) {
				t.Errorf("store after refusal: %d items %d free (%v), want unchanged %d, %d", c, f, err, c0, f0)
			}
		})
	}
}

func TestStoreItemClient(t *testing.T) {
	env := wallettest.New(t, wallettest.Options{})
	ctx := context.Background()
	it := item(env, 7, 700)
	signed := mustStore(t, env, it)
	err := env.Client.StoreItem(ctx, signed)
	if !errors.Is(err, wallet.ErrItemExists) || swOf(err) != 0x6A89 {
		t.Errorf("StoreItem(again) = %v, want ErrItemExists (6A89)", err)
	}
	// Extended length instead of chaining.
	it2 := item(env, 8, 700)
	data := env.SignItem(it2)
	if _, sw := env.Transmit(t, iso7816.Command{CLA: claProp, INS: insStoreItem, Data: data, Extended: true}); sw != iso7816.SWOK {
		t.Fatalf("STORE ITEM, extended length = %v, want 9000", sw)
	}
	got, sig, err := env.Client.ReadItem(ctx, it2.ID)
	if err != nil || !bytes.Equal(got.EncodeSigned(sig), data) {
		t.Errorf("ReadItem(extended-length item) = %v, want what was stored", err)
	}
}

func TestGoodsCommandsRefused(t *testing.T) {
	blank := wallettest.New(t, wallettest.Options{Blank: true})
	env := wallettest.New(t, wallettest.Options{})
	mustStore(t, env, item(env, 1, 3))
	id := item(env, 1, 3).ID
	unknown := item(env, 2, 3).ID
	tests := []struct {
		name string
		env  *wallettest.Env
		cmd  iso7816.Command
		want iso7816.SW
	}{
		{"list while personalizing", blank, iso7816.Command{CLA: claProp, INS: insListItems}, iso7816.SWConditionsNotSatisfied},
		{"store while personalizing", blank, iso7816.Command{CLA: claProp, INS: insStoreItem, Data: []byte{1}}, iso7816.SWConditionsNotSatisfied},
		{"read while personalizing", blank, iso7816.Command{CLA: claProp, INS: insReadItem, Data: id[:]}, iso7816.SWConditionsNotSatisfied},
		{"list with CLA 00", env, iso7816.Command{CLA: 0x00, INS: insListItems}, iso7816.SWCLANotSupported},
		{"list with P1", env, iso7816.Command{CLA: claProp, INS: insListItems, P1: 1}, iso7816.SWIncorrectP1P2},
		{"list with data", env, iso7816.Command{CLA: claProp, INS: insListItems, Data: []byte{1}}, iso7816.SWWrongLength},
		{"read unknown", env, iso7816.Command{CLA: claProp, INS: insReadItem, Data: unknown[:]}, iso7816.SWRefDataNotFound},
		{"read short id", env, iso7816.Command{CLA: claProp, INS: insReadItem, Data: id[:15]}, iso7816.SWWrongLength},
		{"read no id", env, iso7816.Command{CLA: claProp, INS: insReadItem}, iso7816.SWWrongLength},
		{"read with P2", env, iso7816.Command{CLA: claProp, INS: insReadItem, P2: 1, Data: id[:]}, iso7816.SWIncorrectP1P2},
		{"delete without PIN", env, iso7816.Command{CLA: claProp, INS: insDeleteItem, Data: id[:]}, iso7816.SWSecurityStatus},
		{"delete long id", env, iso7816.Command{CLA: claProp, INS: insDeleteItem, Data: append(id[:], 0)}, iso7816.SWWrongLength},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, sw := tt.env.Transmit(t, tt.cmd); sw != tt.want {
				t.Errorf("%02X %02X %02X %02X = %v, want %v", tt.cmd.CLA, tt.cmd.INS, tt.cmd.P1, tt.cmd.P2, sw, tt.want)
			}
		})
	}
	mustVerify(t, env)
	if _, sw := env.Transmit(t, iso7816.Command{CLA: claProp, INS: insDeleteItem, Data: unknown[:]}); sw != iso7816.SWRefDataNotFound {
		t.Errorf("DELETE ITEM unknown after PIN = %v, want 6A88", sw)
	}
	if c, _ := goodsState(t, env); c != 1 {
		t.Errorf("item count after refusals = %d, want 1", c)
	}
}

// TestStoreItemTearing cuts power at every NVM write of a STORE ITEM.
func TestStoreItemTearing(t *testing.T) {
	env := wallettest.New(t, wallettest.Options{})
	mustStore(t, env, item(env, 1, 100))
	before := snapPurse(t, env)
	c0, f0 := goodsState(t, env)
	it := item(env, 2, 600)
	signed := env.SignItem(it)
	op := func(e *wallettest.Env) error { return e.Client.StoreItem(context.Background(), signed) }
	wallettest.Tear(t, env, op, func(t *testing.T, e *wallettest.Env, _ error, cutAt int) {
		ctx := context.Background()
		got, sig, err := e.Client.ReadItem(ctx, it.ID)
		stored := err == nil
		switch {
		case stored && (!bytes.Equal(got.EncodeSigned(sig), signed) || !txn.VerifyItem(&e.OpsKey.PublicKey, &got, sig)):
			t.Errorf("item after cut is stored but not the signed item sent")
		case !stored && !errors.Is(err, iso7816.ErrNotFound):
			t.Errorf("ReadItem after cut = %v, want the item or ErrNotFound", err)
		}
		c, f := goodsState(t, e)
		if want := c0 + b2i(stored); c != want {
			t.Errorf("item count after cut = %d, want %d (stored: %t)", c, want, stored)
		}
		if want := f0 - len(signed)*b2i(stored); f != want {
			t.Errorf("free bytes after cut = %d, want %d (stored: %t)", f, want, stored)
		}
		if s := snapPurse(t, e); s != before {
			t.Errorf("purse, counter, log after STORE ITEM cut = %+v, want unchanged %+v", s, before)
		}
		err = e.Client.StoreItem(ctx, signed)
		switch {
		case stored && !errors.Is(err, wallet.ErrItemExists):
			t.Errorf("storing again a stored item = %v, want ErrItemExists", err)
		case !stored && err != nil:
			t.Errorf("storing again an item lost to the cut = %v, want success", err)
		}
	})
}

func FuzzStoreItem(f *testing.F) {
	env := wallettest.New(f, wallettest.Options{})
	mustVerify(f, env) // DELETE ITEM keeps the store from filling up
	f.Add(env.SignItem(item(env, 1, 0)))
	f.Add(env.SignItem(item(env, 2, 300)))
	f.Add(env.SignItem(item(env, 3, 1024)))
	f.Add([]byte{0xE6, 0x00})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		_, sw := transmitNo6F00(t, env, iso7816.Command{CLA: claProp, INS: insStoreItem, Data: data})
		if sw != iso7816.SWOK {
			return
		}
		it, sig, err := txn.ParseSignedItem(data)
		if err != nil || !txn.VerifyItem(&env.OpsKey.PublicKey, &it, sig) || it.CardNumber != env.CardNumber {
			t.Fatalf("card stored item % X (%v)", data, err)
		}
		if got, _ := readItemRaw(t, env, it.ID[:]); !bytes.Equal(got, data) {
			t.Fatalf("READ ITEM = % X, want % X", got, data)
		}
		if _, sw := transmitNo6F00(t, env, iso7816.Command{CLA: claProp, INS: insDeleteItem, Data: it.ID[:]}); sw != iso7816.SWOK {
			t.Fatalf("DELETE ITEM = %v", sw)
		}
	})
}

func FuzzGoodsCommands(f *testing.F) {
	env := wallettest.New(f, wallettest.Options{})
	mustStore(f, env, item(env, 1, 300))
	id := item(env, 1, 300).ID
	signed := env.SignItem(item(env, 2, 5))
	for i, ins := range []byte{insStoreItem, insListItems, insReadItem, insDeleteItem} {
		f.Add(ins, byte(0), byte(0), id[:])
		f.Add(ins, byte(i), byte(1), []byte{})
	}
	f.Add(byte(insStoreItem), byte(0), byte(0), signed)
	f.Add(byte(0xCA), byte(0xDF), byte(0x40), []byte{})
	f.Add(byte(0xCA), byte(0xDF), byte(0x41), []byte{})
	f.Fuzz(func(t *testing.T, ins, p1, p2 byte, data []byte) {
		cla := byte(claProp)
		switch ins {
		case 0x20: // VERIFY with the right PIN, so that DELETE ITEM can run
			if err := env.Client.VerifyPIN(context.Background(), env.PIN); err != nil {
				t.Fatalf("VerifyPIN() = %v", err)
			}
			return
		case 0xCA:
			cla = 0x00
		case insStoreItem, insListItems, insReadItem, insDeleteItem:
		default:
			ins = []byte{insStoreItem, insListItems, insReadItem, insDeleteItem}[ins%4]
		}
		transmitNo6F00(t, env, iso7816.Command{CLA: cla, INS: ins, P1: p1, P2: p2, Data: data, Ne: 256})
		c, f := goodsState(t, env)
		items, err := env.Client.Items(context.Background())
		if err != nil || len(items) != c || c > maxItems || f > maxItemBytes {
			t.Fatalf("after %02X: Items() = %d items, %v; DF40 %d, DF41 %d", ins, len(items), err, c, f)
		}
	})
}

func BenchmarkStoreItem(b *testing.B) {
	env := wallettest.New(b, wallettest.Options{})
	ctx := context.Background()
	mustVerify(b, env)
	it := item(env, 1, 200)
	signed := env.SignItem(it)
	b.ReportAllocs()
	for range b.N {
		if err := env.Client.StoreItem(ctx, signed); err != nil {
			b.Fatalf("StoreItem() = %v", err)
		}
		b.StopTimer()
		if err := env.Client.DeleteItem(ctx, it.ID); err != nil {
			b.Fatalf("DeleteItem() = %v", err)
		}
		b.StartTimer()
	}
}

func BenchmarkReadItem(b *testing.B) {
	env := wallettest.New(b, wallettest.Options{})
	ctx := context.Background()
	it := item(env, 1, 1024)
	mustStore(b, env, it)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := env.Client.ReadItem(ctx, it.ID); err != nil {
			b.Fatalf("ReadItem() = %v", err)
		}
	}
}

// TestStoreItemNVMFull fills a card with a small NVM: STORE ITEM answers
// 6A84 from the memory before the store's own limits, and writes nothing.
func TestStoreItemNVMFull(t *testing.T) {
	env := wallettest.New(t, wallettest.Options{Capacity: 6 << 10})
	var n byte
	for ; n < maxItems; n++ {
		err := env.Client.StoreItem(context.Background(), env.SignItem(item(env, n, 1024)))
		if errors.Is(err, iso7816.ErrNoSpace) {
			break
		}
		if err != nil {
			t.Fatalf("StoreItem(%d) = %v", n, err)
		}
	}
	c, f := goodsState(t, env)
	if size := len(env.SignItem(item(env, n, 1024))); c != int(n) || f < size {
		t.Fatalf("store full after %d items (DF40 %d), %d bytes free for a %d-byte item: want the NVM to be what is full", n, c, f, size)
	}
	if _, _, err := env.Client.ReadItem(context.Background(), item(env, n, 0).ID); !errors.Is(err, iso7816.ErrNotFound) {
		t.Errorf("ReadItem(refused item) = %v, want ErrNotFound", err)
	}
	// Deleting makes room again.
	mustVerify(t, env)
	if err := env.Client.DeleteItem(context.Background(), item(env, 0, 0).ID); err != nil {
		t.Fatalf("DeleteItem() = %v", err)
	}
	mustStore(t, env, item(env, n, 1024))
}

// TestDeleteItemTearing cuts power at every NVM write of VERIFY + DELETE
// ITEM: the item is either still there, whole, or gone.
func TestDeleteItemTearing(t *testing.T) {
	env := wallettest.New(t, wallettest.Options{})
	it := item(env, 3, 400)
	signed := mustStore(t, env, it)
	mustStore(t, env, item(env, 4, 10))
	c0, f0 := goodsState(t, env)
	op := func(e *wallettest.Env) error {
		if err := e.Client.VerifyPIN(context.Background(), e.PIN); err != nil {
			return err
		}
		return e.Client.DeleteItem(context.Background(), it.ID)
	}
	wallettest.Tear(t, env, op, func(t *testing.T, e *wallettest.Env, _ error, cutAt int) {
		got, sig, err := e.Client.ReadItem(context.Background(), it.ID)
		present := err == nil
		switch {
		case present && !bytes.Equal(got.EncodeSigned(sig), signed):
			t.Errorf("item after cut is not the item stored")
		case !present && !errors.Is(err, iso7816.ErrNotFound):
			t.Errorf("ReadItem after cut = %v, want the item or ErrNotFound", err)
		}
		c, f := goodsState(t, e)
		if wc, wf := c0-b2i(!present), f0+len(signed)*b2i(!present); c != wc || f != wf {
			t.Errorf("after cut: count %d free %d, want %d and %d (present: %t)", c, f, wc, wf, present)
		}
	})
}
