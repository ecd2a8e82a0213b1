package piv

import (
	"encoding/hex"

	"cardlink/internal/card"
	"cardlink/internal/card/nvm"
	"cardlink/internal/iso7816"
)

// GET DATA and PUT DATA address the current DF: P1-P2 3F FF (SP 800-73-4
// Part 2 §3.1.2).
const (
	p1Data = 0x3F
	p2Data = 0xFF
)

// maxObject is the largest object (its whole 53 TLV) PUT DATA stores, as
// on a YubiKey 5 (a certificate object of a little under 3 KiB).
const maxObject = 3072

// Object tags (SP 800-73-4 Part 1 §3.1, Table 3; YubiKey objects 5FFFxx).
const (
	tagDiscovery  = 0x7E
	objFirst      = 0x5FC101 // X.509 Certificate for Card Authentication
	objLast       = 0x5FC123 // Pairing Code Reference Data Container
	objFingers    = 0x5FC103
	objFacial     = 0x5FC108
	objPrinted    = 0x5FC109
	objIris       = 0x5FC121
	yubicoFirst   = 0x5FFF00 // YubiKey admin data, attestation, …
	yubicoLast    = 0x5FFF15
	discoveryPINs = 0x40 // PIN usage policy: the PIV PIN satisfies the ACRs
)

// discovery is the Discovery Object (SP 800-73-4 Part 1 §3.3.2): the AID
// and the PIN usage policy (PIV PIN only, no global PIN). It is in ROM:
// PUT DATA cannot change it.
var discovery = iso7816.AppendTLV(nil, tagDiscovery,
	append(iso7816.AppendTLV(nil, tagAID, AID),
		iso7816.AppendTLV(nil, 0x5F2F, []byte{discoveryPINs, 0x00})...))

// objectTag decodes the 5C tag list of GET DATA or PUT DATA: one tag of 1
// to 3 bytes.
func objectTag(t iso7816.TLV) (uint32, bool) {
	if t.Tag != tagTagList || len(t.Value) < 1 || len(t.Value) > 3 {
		return 0, false
	}
	var v uint32
	for _, b := range t.Value {
		v = v<<8 | uint32(b)
	}
	return v, true
}

// storable reports whether PUT DATA may write the object.
func storable(tag uint32) bool {
	return tag >= objFirst && tag <= objLast || tag >= yubicoFirst && tag <= yubicoLast
}

// pinProtected reports whether reading the object needs the PIN (access
// rule "PIN" in SP 800-73-4 Part 1 Table 2: biometrics, printed
// information).
func pinProtected(tag uint32) bool {
	switch tag {
	case objFingers, objFacial, objPrinted, objIris:
		return true
	}
	return false
}

// objectNVMKey is where the object is kept.
func objectNVMKey(tag uint32) string {
	return keyObject + hex.EncodeToString([]byte{byte(tag >> 16), byte(tag >> 8), byte(tag)})
}

// getData handles GET DATA (00 CB 3F FF, data 5C tag; SP 800-73-4 Part 2
// §3.1.2). It answers the object as stored (53 { … }), or the Discovery
// Object (7E { … }); 6A82 when the object is absent, 6982 for a
// PIN-protected object before VERIFY.
func getData(ctx *card.Context, cmd iso7816.Command) ([]byte, iso7816.SW) {
	if cmd.P1 != p1Data || cmd.P2 != p2Data {
		return nil, iso7816.SWIncorrectP1P2
	}
	list, ok := parseFlat(cmd.Data)
	if !ok || len(list) != 1 {
		return nil, iso7816.SWWrongData
	}
	tag, ok := objectTag(list[0])
	if !ok {
		return nil, iso7816.SWWrongData
	}
	if tag == tagDiscovery {
		return discovery, iso7816.SWOK
	}
	if !storable(tag) {
		return nil, iso7816.SWNotFound
	}
	if pinProtected(tag) && !pinVerified(ctx) {
		return nil, iso7816.SWSecurityStatus
	}
	v := ctx.NVM.Get(objectNVMKey(tag))
	if v == nil {
		return nil, iso7816.SWNotFound
	}
	return v, iso7816.SWOK
}

// putData handles PUT DATA (00 DB 3F FF, data 5C tag || 53 content; SP
// 800-73-4 Part 2 §3.3.1). It needs the management key. Empty content
// (53 00) deletes the object. The Discovery Object and the BIT group
// template are not writable (6A80).
func putData(ctx *card.Context, cmd iso7816.Command) ([]byte, iso7816.SW) {
	if cmd.P1 != p1Data || cmd.P2 != p2Data {
		return nil, iso7816.SWIncorrectP1P2
	}
	if !mgmtAuthenticated(ctx) {
		return nil, iso7816.SWSecurityStatus
	}
	list, ok := parseFlat(cmd.Data) // lenient: yubico-piv-tool encodes 255 as 82 00 FF
	if !ok || len(list) != 2 || list[1].Tag != tagData {
		return nil, iso7816.SWWrongData
	}
	tag, ok := objectTag(list[0])
	if !ok || !storable(tag) {
		return nil, iso7816.SWWrongData
	}
	obj := iso7816.AppendTLV(nil, tagData, list[1].Value)
	if len(obj) > maxObject {
		return nil, iso7816.SWNoSpace
	}
	if err := ctx.NVM.Update(func(tx *nvm.Tx) error {
		if len(list[1].Value) == 0 {
			tx.Delete(objectNVMKey(tag))
			return nil
		}
		tx.Put(objectNVMKey(tag), obj)
		return nil
	}); err != nil {
		return nil, commitSW(err)
	}
	return nil, iso7816.SWOK
}
