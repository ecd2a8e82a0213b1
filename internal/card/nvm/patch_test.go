package nvm

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
)

// checkImage checks that img is exactly what encodeSlot gives for want
// with sequence number seq, and that lookup finds every record.
func checkImage(t *testing.T, img *image, seq uint64, want map[string][]byte) {
	t.Helper()
	if full := encodeSlot(seq, want); !bytes.Equal(img.buf, full) {
		t.Fatalf("patched image differs from a full encoding of %q:\n got % x\nwant % x", want, img.buf, full)
	}
	if !slices.IsSorted(img.keys) || len(img.keys) != len(want) || len(img.offs) != len(want)+1 {
		t.Fatalf("%d keys (sorted %v), %d offsets; want %d records",
			len(img.keys), slices.IsSorted(img.keys), len(img.offs), len(want))
	}
	for k, v := range want {
		got, ok := img.lookup(k)
		if !ok || !bytes.Equal(got, v) {
			t.Fatalf("lookup(%q) = %q, %v, want %q", k, got, ok, v)
		}
	}
	if n := payloadLen(want); img.payloadLen() != n {
		t.Fatalf("payloadLen() = %d, want %d", img.payloadLen(), n)
	}
}

// patchStep applies over to the image cur (and to the model want) the way
// Update does, reusing spare, and checks the result against a full
// encoding. It returns the new current and spare images.
func patchStep(t *testing.T, cur, spare *image, seq uint64, want map[string][]byte, over map[string]txValue, capacity int) (*image, *image) {
	t.Helper()
	next := maps.Clone(want)
	for k, v := range over {
		if v.deleted {
			delete(next, k)
		} else {
			next[k] = v.value
		}
	}
	before := bytes.Clone(cur.buf)
	img, _, err := patch(cur, spare, seq, over, capacity, nil)
	if !bytes.Equal(cur.buf, before) {
		t.Fatalf("patch modified the current image")
	}
	if payloadLen(next) > capacity {
		if !errors.Is(err, ErrFull) {
			t.Fatalf("patch over capacity = %v, want ErrFull", err)
		}
		return cur, spare
	}
	if err != nil {
		t.Fatalf("patch = %v", err)
	}
	checkImage(t, img, seq, next)
	clear(want)
	maps.Copy(want, next)
	return img, cur
}

// emptyImage is the image Format writes.
func emptyImage(t *testing.T) *image {
	img, err := parseImage(encodeSlot(1, nil))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestPatchMatchesEncode runs random transactions (puts of new and existing
// keys, deletes, values growing and shrinking, some over capacity) through
// patch with reused buffers, and compares every image with encodeSlot.
func TestPatchMatchesEncode(t *testing.T) {
	const capacity = 2048
	rng := rand.New(rand.NewPCG(1, 2))
	keyPool := []string{"a", "b", "c", "wallet/atc", "wallet/log/00", "wallet/log/01", "wallet/log/15",
		"wallet/pin/tries", "z", string(bytes.Repeat([]byte{0xFF}, MaxKeyLen)), "\x00"}
	cur, spare := emptyImage(t), (*image)(nil)
	want := map[string][]byte{}
	full := 0
	for step := range 3000 {
		over := map[string]txValue{}
		for range 1 + rng.IntN(4) {
			k := keyPool[rng.IntN(len(keyPool))]
			switch _, had := want[k]; {
			case had && rng.IntN(4) == 0:
				over[k] = txValue{deleted: true}
			default:
				over[k] = txValue{value: bytes.Repeat([]byte{byte(step)}, rng.IntN(300))}
			}
		}
		next, nextSpare := patchStep(t, cur, spare, uint64(step+2), want, over, capacity)
		if next == cur {
			full++
		}
		cur, spare = next, nextSpare
	}
	if full == 0 || full > 1500 {
		t.Errorf("%d of 3000 transactions were over capacity; the test means to cover both outcomes", full)
	}
}

// TestPatchCases covers the edges by name: first, middle and last
// records, every record at once, and emptying the memory.
func TestPatchCases(t *testing.T) {
	v := func(s string) txValue { return txValue{value: []byte(s)} }
	d := txValue{deleted: true}
	base := map[string]txValue{"b": v("2"), "d": v("4"), "f": v("6")}
	tests := []struct {
		name string
		over map[string]txValue
	}{
		{"replace first", map[string]txValue{"b": v("22")}},
		{"replace middle same length", map[string]txValue{"d": v("x")}},
		{"replace last shorter", map[string]txValue{"f": v("")}},
		{"insert before all", map[string]txValue{"a": v("1")}},
		{"insert between", map[string]txValue{"c": v("3"), "e": v("5")}},
		{"insert after all", map[string]txValue{"g": v("7")}},
		{"delete first", map[string]txValue{"b": d}},
		{"delete last", map[string]txValue{"f": d}},
		{"delete all", map[string]txValue{"b": d, "d": d, "f": d}},
		{"delete one, insert next to it", map[string]txValue{"d": d, "dd": v("x"), "c": v("")}},
		{"everything", map[string]txValue{"a": v("1"), "b": d, "c": v("3"), "d": v("44"), "f": d, "g": v("7")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := map[string][]byte{}
			cur, spare := patchStep(t, emptyImage(t), nil, 2, want, base, 1024)
			cur, spare = patchStep(t, cur, spare, 3, want, tt.over, 1024)
			// Once more on the reused buffer, back to the base.
			back := map[string]txValue{}
			for k := range tt.over {
				back[k] = d
			}
			maps.Copy(back, base)
			patchStep(t, cur, spare, 4, want, back, 1024)
		})
	}
}

// FuzzPatch decodes a payload as the current image, then applies a
// transaction drawn from ops: the patched image must equal a full
// encoding of the resulting records, whatever buffer it reuses.
func FuzzPatch(f *testing.F) {
	f.Add([]byte{}, []byte{})
	f.Add(encodeSlot(1, map[string][]byte{"a": []byte("1"), "c": nil})[slotHeaderLen:slotHeaderLen+11], []byte{1, 'b', 2, 'x', 'y', 0, 'a'})
	f.Add([]byte{1, 'a', 0, 0, 0, 1, 'x'}, []byte{0, 'a', 1, 'a', 0, 2, 'z', 'z'})
	f.Fuzz(func(t *testing.T, payload, ops []byte) {
		if _, err := decodeRecords(payload); err != nil {
			return
		}
		buf := make([]byte, slotHeaderLen, slotHeaderLen+len(payload)+sumLen)
		putSlotHeader(buf, 1, len(payload))
		buf = append(append(buf, payload...), make([]byte, sumLen)...)
		cur, err := parseImage(buf)
		if err != nil {
			t.Fatalf("parseImage of a payload decodeRecords accepts = %v", err)
		}
		want, _ := decodeRecords(payload)
		// ops: a byte of key length (0: delete the key that follows, of
		// length 1), the key, then for a put a byte of value length and
		// the value.
		over := map[string]txValue{}
		for len(ops) > 0 {
			kl, del := int(ops[0])%MaxKeyLen, ops[0] == 0
			if del {
				kl = 1
			}
			if len(ops) < 1+kl {
				break
			}
			k := string(ops[1 : 1+kl])
			ops = ops[1+kl:]
			if del {
				if _, had := want[k]; had {
					over[k] = txValue{deleted: true}
				}
				continue
			}
			if kl == 0 || len(ops) < 1 {
				break
			}
			vl := min(int(ops[0]), len(ops)-1)
			over[k] = txValue{value: bytes.Clone(ops[1 : 1+vl])}
			ops = ops[1+vl:]
		}
		if len(over) == 0 {
			return
		}
		// A spare holding an unrelated image, to catch reuse of stale bytes.
		spare, err := parseImage(encodeSlot(9, map[string][]byte{"spare": bytes.Repeat([]byte("s"), 100)}))
		if err != nil {
			t.Fatal(err)
		}
		patchStep(t, cur, spare, 2, want, over, 1<<16)
	})
}

// TestPatchKeepsKeysWhenKeysStay checks the point of sharing: an update
// that only changes values shares the key list of the image it patches,
// and one that adds a key builds its own and leaves the shared one as it
// was.
func TestPatchKeepsKeysWhenKeysStay(t *testing.T) {
	want := map[string][]byte{}
	for i := range 10 {
		want[fmt.Sprintf("k%d", i)] = []byte("v")
	}
	over := map[string]txValue{}
	for k, v := range want {
		over[k] = txValue{value: v}
	}
	cur, spare := patchStep(t, emptyImage(t), nil, 2, map[string][]byte{}, over, 1024)
	keys, before := cur.keys, slices.Clone(cur.keys)
	next, _ := patchStep(t, cur, spare, 3, want, map[string]txValue{"k3": {value: []byte("longer")}}, 1024)
	if &next.keys[0] != &keys[0] {
		t.Errorf("a value-only update built a new key list")
	}
	added, _ := patchStep(t, next, cur, 4, want, map[string]txValue{"k35": {value: nil}}, 1024)
	if &added.keys[0] == &keys[0] || !slices.Equal(keys, before) {
		t.Errorf("adding a key kept the shared key list or changed it: %q, was %q", keys, before)
	}
}
