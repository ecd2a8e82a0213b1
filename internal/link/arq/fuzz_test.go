package arq

import (
	"bytes"
	"testing"
)

// FuzzDecoder feeds the frame decoder arbitrary line bytes, in two pieces
// split anywhere: it must not panic nor hold more than one frame's worth,
// and every frame it accepts must re-encode to exactly the bytes it was
// found in, and decode again to itself.
func FuzzDecoder(f *testing.F) {
	seed := func(fr frame) []byte { return appendFrame(nil, &fr, true) }
	f.Add(seed(frame{kind: kindAck, ack: 3, sack: 0x81}), 0)
	f.Add(append(seed(frame{kind: kindData, seq: 9, ack: 2, payload: []byte{0x7e, 0x7d, 'x'}}), seed(frame{kind: kindFin, seq: 10, over: true})[1:]...), 5)
	f.Add([]byte("garbage\x7e\x7d\x5e\x7e"), 3)
	f.Add(append([]byte("noise before"), seed(frame{kind: kindData, seq: 1, payload: []byte("payload")})...), 12)
	f.Fuzz(func(t *testing.T, line []byte, split int) {
		if split < 0 || split > len(line) {
			split = len(line) / 2
		}
		var d decoder
		var got []frame
		emit := func(fr frame) {
			fr.payload = bytes.Clone(fr.payload)
			got = append(got, fr)
		}
		d.feed(line[:split], emit)
		d.feed(line[split:], emit)
		// (The decoder's body is a fixed array: holding more than maxBody
		// would have panicked, which the run itself checks.)
		for _, fr := range got {
			enc := appendFrame(nil, &fr, true)
			if !bytes.Contains(line, enc[1:]) {
				t.Fatalf("accepted frame %+v re-encodes to %x, not found in the input", fr, enc)
			}
			again, bad := decodeAll(enc)
			if len(again) != 1 || bad != 0 || !sameFrame(again[0], fr) {
				t.Fatalf("frame %+v re-decodes to %+v (%d bad)", fr, again, bad)
			}
		}
	})
}

func sameFrame(a, b frame) bool {
	return a.kind == b.kind && a.over == b.over && a.seq == b.seq && a.ack == b.ack && a.sack == b.sack && bytes.Equal(a.payload, b.payload)
}
