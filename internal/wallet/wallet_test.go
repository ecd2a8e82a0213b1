package wallet

import (
	"bytes"
	"encoding/binary"
	"testing"

	"cardlink/internal/iso7816"
	"cardlink/internal/txn"
)

// encodeLogRecord is the card's encoding of a log record.
func encodeLogRecord(r LogRecord) []byte {
	b := iso7816.AppendTLV(nil, tagLogPurpose, []byte{byte(r.Purpose)})
	b = iso7816.AppendTLV(b, tagLogCounter, binary.BigEndian.AppendUint32(nil, r.Counter))
	b = iso7816.AppendTLV(b, tagLogCVM, []byte{byte(r.CVM)})
	b = iso7816.AppendTLV(b, tagLogPayload, r.Payload)
	return iso7816.AppendTLV(nil, tagLogRecord, b)
}

// encodeSignature is the card's encoding of a signing command's reply.
func encodeSignature(s Signature) []byte {
	b := iso7816.AppendTLV(nil, tagCounter, binary.BigEndian.AppendUint32(nil, s.Counter))
	b = iso7816.AppendTLV(b, tagCVM, []byte{byte(s.CVM)})
	return iso7816.AppendTLV(b, tagSignature, s.Sig)
}

func TestParseSignature(t *testing.T) {
	want := Signature{Counter: 7, CVM: txn.CVMBiometric, Sig: []byte{0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01}}
	for _, tc := range []struct {
		name string
		b    []byte
		ok   bool
	}{
		{"valid", encodeSignature(want), true},
		{"no signature", encodeSignature(want)[:11], false},
		{"reordered", append(encodeSignature(want)[7:], encodeSignature(want)[:7]...), false},
		{"empty", nil, false},
	} {
		got, err := parseSignature(tc.b)
		if (err == nil) != tc.ok || tc.ok && (got.Counter != want.Counter || got.CVM != want.CVM || !bytes.Equal(got.Sig, want.Sig)) {
			t.Errorf("parseSignature(%s) = %+v, %v, want %+v ok %v", tc.name, got, err, want, tc.ok)
		}
	}
}

func FuzzParseLogRecord(f *testing.F) {
	f.Add(encodeLogRecord(LogRecord{Purpose: txn.PurposeTransaction, Counter: 9, CVM: txn.CVMOfflinePIN, Payload: []byte{0xE1, 0}}))
	f.Add(encodeLogRecord(LogRecord{Purpose: txn.PurposePurseDebit, Counter: 1 << 31, Payload: bytes.Repeat([]byte{1}, 300)}))
	f.Add([]byte{0x70, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseLogRecord(b)
		if err != nil {
			return
		}
		if got := encodeLogRecord(r); !bytes.Equal(got, b) {
			t.Fatalf("ParseLogRecord(% X) = %+v, which encodes as % X", b, r, got)
		}
	})
}

func FuzzParseSignature(f *testing.F) {
	f.Add(encodeSignature(Signature{Counter: 1, CVM: txn.CVMOnlinePIN, Sig: []byte{0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01}}))
	f.Add([]byte{0x9F, 0x36, 0x04, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := parseSignature(b)
		if err != nil {
			return
		}
		if got := encodeSignature(s); !bytes.Equal(got, b) {
			t.Fatalf("parseSignature(% X) = %+v, which encodes as % X", b, s, got)
		}
	})
}

func FuzzParseFCI(f *testing.F) {
	prop := iso7816.AppendTLV(nil, tagAppLabel, []byte("cardlink wallet"))
	prop = iso7816.AppendTLV(prop, tagLifecycle, []byte{1})
	fci := iso7816.AppendTLV(nil, tagFCI, append(iso7816.AppendTLV(nil, tagDFName, AID), iso7816.AppendTLV(nil, tagFCIProp, prop)...))
	f.Add(fci)
	f.Add([]byte{0x6F, 0x00})
	f.Add(iso7816.AppendTLV(nil, tagPublicKey, iso7816.AppendTLV(nil, tagPublicPoint, append([]byte{4}, make([]byte, 64)...))))
	f.Fuzz(func(t *testing.T, b []byte) {
		parseFCI(b)
		parsePublicKey(b)
	})
}
