package nvm

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
)

// image is one slot image held in RAM: the bytes a commit writes to the
// medium (header, payload, checksum) and where its records start. The
// image a Memory serves is never modified; an Update builds the next one
// by patching the current one into the spare image's buffer (see patch).
//
// keys may be shared between images with the same key set and is never
// modified once built (a key's record is found by binary search); buf and
// offs belong to one image.
type image struct {
	buf  []byte   // slot image as on the medium
	keys []string // record keys, sorted
	offs []int    // offs[i]: where record i starts in buf; offs[len(keys)]: payload end
}

// payloadLen is the length of the image's payload.
func (img *image) payloadLen() int { return img.offs[len(img.keys)] - slotHeaderLen }

// recordLen is the encoded length of record i.
func (img *image) recordLen(i int) int { return img.offs[i+1] - img.offs[i] }

// value returns the value of record i, sharing buf.
func (img *image) value(i int) []byte {
	return img.buf[img.offs[i]+recordOver+len(img.keys[i]) : img.offs[i+1]]
}

// lookup returns the value stored under key, sharing buf, and whether key
// is present.
func (img *image) lookup(key string) ([]byte, bool) {
	i, ok := slices.BinarySearch(img.keys, key)
	if !ok {
		return nil, false
	}
	return img.value(i), true
}

// parseImage indexes the records of a slot image whose header and checksum
// are checked already. buf is kept, not copied.
func parseImage(buf []byte) (*image, error) {
	keys, offs, err := parseRecords(buf[slotHeaderLen:len(buf)-sumLen], slotHeaderLen)
	if err != nil {
		return nil, err
	}
	return &image{buf: buf, keys: keys, offs: offs}, nil
}

// parseRecords parses a payload: its keys in order and the offset of each
// record in p plus base, followed by the offset of p's end plus base. It
// fails unless p is a sequence of well-formed records in strictly
// increasing key order.
func parseRecords(p []byte, base int) (keys []string, offs []int, err error) {
	at := 0
	for at < len(p) {
		r := p[at:]
		kl := int(r[0])
		if kl < 1 || kl > MaxKeyLen {
			return nil, nil, fmt.Errorf("key length %d out of range", kl)
		}
		if len(r) < recordOver+kl {
			return nil, nil, errors.New("record truncated")
		}
		key := string(r[1 : 1+kl])
		if len(keys) > 0 && key <= keys[len(keys)-1] {
			return nil, nil, fmt.Errorf("key %q out of order", key)
		}
		vl := binary.BigEndian.Uint32(r[1+kl:])
		if uint64(vl) > uint64(len(r)-recordOver-kl) {
			return nil, nil, errors.New("value truncated")
		}
		keys = append(keys, key)
		offs = append(offs, base+at)
		at += recordOver + kl + int(vl)
	}
	return keys, append(offs, base+at), nil
}

// payloadLen is the encoded size of recs.
func payloadLen(recs map[string][]byte) int {
	n := 0
	for k, v := range recs {
		n += recordOver + len(k) + len(v)
	}
	return n
}

// encodeSlot returns the slot image for recs with sequence number seq,
// encoding every record. Update patches the current image instead (see
// patch), which must give the same bytes; encodeSlot is what Format writes
// and what tests compare patch with.
func encodeSlot(seq uint64, recs map[string][]byte) []byte {
	n := payloadLen(recs)
	b := make([]byte, slotHeaderLen, slotHeaderLen+n+sumLen)
	putSlotHeader(b, seq, n)
	for _, k := range slices.Sorted(maps.Keys(recs)) {
		v := recs[k]
		b = append(b, byte(len(k)))
		b = append(b, k...)
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	sum := sha256.Sum256(b)
	return append(b, sum[:]...)
}

// putSlotHeader writes the slot header for sequence number seq and a
// payload of n bytes into b[:slotHeaderLen].
func putSlotHeader(b []byte, seq uint64, n int) {
	copy(b, slotMagic[:])
	binary.BigEndian.PutUint64(b[4:], seq)
	binary.BigEndian.PutUint32(b[12:], uint32(n))
}

// patch returns the image with sequence number seq that holds old's records
// as changed by over, built in spare's buffers (spare may be nil; it must
// not be old, nor be read by anyone while patch runs). It fails with
// ErrFull, touching nothing, when the records would need more than
// capacity bytes.
//
// The result has the bytes encodeSlot gives for the same records: the
// records before, between and after the changed keys are copied from old
// in one piece each, and only the changed records are encoded. keys is
// shared with old unless over adds or removes a key. scratch is
// room for the sorted changed keys; patch returns it for reuse.
func patch(old, spare *image, seq uint64, over map[string]txValue, capacity int, scratch []string) (*image, []string, error) {
	changed := scratch[:0]
	for k := range over {
		changed = append(changed, k)
	}
	slices.Sort(changed)
	defer clear(changed)

	n := old.payloadLen()
	reindex := false
	for _, k := range changed {
		v := over[k]
		i, had := slices.BinarySearch(old.keys, k)
		if had {
			n -= old.recordLen(i)
		}
		if !v.deleted {
			n += recordOver + len(k) + len(v.value)
		}
		if had == v.deleted {
			reindex = true // a key comes or goes
		}
	}
	if n > capacity {
		return nil, changed, fmt.Errorf("%w: records need %d bytes, capacity is %d", ErrFull, n, capacity)
	}

	img := spare
	if img == nil {
		img = new(image)
	}
	size := slotHeaderLen + n + sumLen
	buf := img.buf
	if cap(buf) < size {
		buf = make([]byte, size, size+size/4) // room to grow a little
	}
	buf = buf[:size]
	putSlotHeader(buf, seq, n)
	offs := img.offs[:0]
	var keys []string
	if reindex {
		keys = make([]string, 0, len(old.keys)+len(changed))
	}

	w := slotHeaderLen // where the next record goes
	i := 0             // first record of old not yet copied or replaced
	copyOld := func(j int) {
		if i == j {
			return
		}
		start, end := old.offs[i], old.offs[j]
		copy(buf[w:], old.buf[start:end])
		delta := w - start
		for _, o := range old.offs[i:j] {
			offs = append(offs, o+delta)
		}
		if reindex {
			keys = append(keys, old.keys[i:j]...)
		}
		w += end - start
		i = j
	}
	for _, k := range changed {
		v := over[k]
		j, had := slices.BinarySearch(old.keys, k)
		copyOld(j)
		if had {
			i++ // replaced or deleted
		}
		if v.deleted {
			continue
		}
		offs = append(offs, w)
		if reindex {
			keys = append(keys, k)
		}
		buf[w] = byte(len(k))
		w++
		w += copy(buf[w:], k)
		binary.BigEndian.PutUint32(buf[w:], uint32(len(v.value)))
		w += 4
		w += copy(buf[w:], v.value)
	}
	copyOld(len(old.keys))
	offs = append(offs, w)
	if w != slotHeaderLen+n {
		panic("nvm: patch: payload length mismatch") // a bug in the size sum above
	}
	sum := sha256.Sum256(buf[:w])
	copy(buf[w:], sum[:])

	img.buf, img.offs = buf, offs
	img.keys = old.keys
	if reindex {
		img.keys = keys
	}
	return img, changed, nil
}
