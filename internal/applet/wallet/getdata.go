package wallet

import (
	"encoding/binary"

	"cardlink/internal/card"
	"cardlink/internal/iso7816"
)

// getData handles GET DATA (00 CA P1-P2 = tag). The reply is the value of
// the data object alone (no tag, no length). Tags the core does not know go to
// the purse (purseData) and the e-goods store (goodsData); 6A88 if nobody
// has the object.
func getData(ctx *card.Context, cmd iso7816.Command) ([]byte, iso7816.SW) {
	if len(cmd.Data) != 0 {
		return nil, iso7816.SWWrongLength
	}
	tag := dataTag(cmd)
	v, ok := coreData(ctx, tag)
	if !ok {
		v, ok = purseData(ctx, tag)
	}
	if !ok {
		v, ok = goodsData(ctx, tag)
	}
	if !ok {
		v, ok = persoData(ctx, tag)
	}
	if !ok {
		return nil, iso7816.SWRefDataNotFound
	}
	return v, iso7816.SWOK
}

// coreData returns the value of one of the core's readable data objects.
// Secrets (private key, PIN, PUK, template, salt) have no tag here.
func coreData(ctx *card.Context, tag iso7816.Tag) ([]byte, bool) {
	present := func(key string) ([]byte, bool) {
		v := ctx.NVM.Get(key)
		return v, v != nil
	}
	switch tag {
	case tagCardNumber:
		return present(keyCardNum)
	case tagCertificate:
		return present(keyCert)
	case tagCAKeyID:
		return present(keyCAKeyID)
	case tagOpsKeyID:
		return present(keyOpsKeyID)
	case tagOpsKey:
		return present(keyOpsPub)
	case tagLifecycle:
		if operational(ctx) {
			return []byte{stateOperational}, true
		}
		return []byte{statePersonalizing}, true
	case tagCounter:
		return binary.BigEndian.AppendUint32(nil, getUint32(ctx.NVM.Get(keyCounter))), true
	case tagPINTries:
		return present(keyPINTries)
	case tagPUKTries:
		return present(keyPUKTries)
	case tagBioTries:
		return present(keyBioTries)
	case tagBioThreshold:
		return present(keyBioThresh)
	case tagLogCapacity:
		return []byte{logCapacity}, true
	case tagLogUsed:
		_, used := logHead(ctx.NVM.Get)
		return []byte{byte(used)}, true
	}
	return nil, false
}

// persoData answers for the purse parameters written at personalization
// when the purse does not (before personalization ends, say).
func persoData(ctx *card.Context, tag iso7816.Tag) ([]byte, bool) {
	var v []byte
	switch tag {
	case tagPersoCurrency:
		v = ctx.NVM.Get(keyPurseCurrency)
	case tagPersoMax:
		v = ctx.NVM.Get(keyPurseMax)
	}
	return v, v != nil
}
