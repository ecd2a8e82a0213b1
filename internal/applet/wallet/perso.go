package wallet

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/asn1"
	"encoding/binary"
	"math"

	"cardlink/internal/card"
	"cardlink/internal/card/nvm"
	"cardlink/internal/iso7816"
	"cardlink/internal/money"
	"cardlink/internal/txn"
)

// Personalization limits (docs/wallet-applet.md, "PUT DATA").
const (
	maxCertLen  = 2048 // card certificate, DER
	maxKeyIDLen = 32   // CA and ops key ids
	pointLen    = 65   // uncompressed P-256 point
	saltLen     = 16
)

// dataTag returns the tag named by P1-P2 of GET DATA and PUT DATA: P1 00
// names a one-byte tag (00 CA 00 5A), anything else a two-byte tag
// (00 CA DF 20).
func dataTag(cmd iso7816.Command) iso7816.Tag {
	if cmd.P1 == 0 {
		return iso7816.Tag(cmd.P2)
	}
	return iso7816.Tag(cmd.P1)<<8 | iso7816.Tag(cmd.P2)
}

// generateKey handles GENERATE KEY (00 47 00 00): a new P-256 key pair
// replaces any earlier one (and the certificate written for it). The reply
// is 7F49 { 86 uncompressed point }.
func generateKey(ctx *card.Context, cmd iso7816.Command) ([]byte, iso7816.SW) {
	if cmd.P1 != 0 || cmd.P2 != 0 {
		return nil, iso7816.SWIncorrectP1P2
	}
	if len(cmd.Data) != 0 {
		return nil, iso7816.SWWrongLength
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), ctx.Rand)
	if err != nil {
		return nil, iso7816.SWUnknown
	}
	priv, err := k.Bytes()
	if err != nil {
		return nil, iso7816.SWUnknown
	}
	pub, err := k.PublicKey.Bytes()
	if err != nil {
		return nil, iso7816.SWUnknown
	}
	err = ctx.NVM.Update(func(tx *nvm.Tx) error {
		tx.Put(keyPrivate, priv)
		tx.Delete(keyCert)
		return nil
	})
	if err != nil {
		return nil, commitSW(err)
	}
	return iso7816.AppendTLV(nil, tagPublicKey, iso7816.AppendTLV(nil, tagPublicPoint, pub)), iso7816.SWOK
}

// putData handles PUT DATA (00 DA P1-P2 = tag) during personalization.
func putData(ctx *card.Context, cmd iso7816.Command) ([]byte, iso7816.SW) {
	v := cmd.Data
	fixed := func(n int) iso7816.SW {
		if len(v) != n {
			return iso7816.SWWrongLength
		}
		return iso7816.SWOK
	}
	var put func(tx *nvm.Tx)
	switch tag := dataTag(cmd); tag {
	case tagCardNumber:
		if sw := fixed(8); !sw.OK() {
			return nil, sw
		}
		if _, err := txn.ParseCardNumberBCD(v); err != nil {
			return nil, iso7816.SWWrongData
		}
		put = func(tx *nvm.Tx) { tx.Put(keyCardNum, v) }
	case tagCertificate:
		if len(v) == 0 || len(v) > maxCertLen {
			return nil, iso7816.SWWrongLength
		}
		k := privateKey(ctx)
		if k == nil {
			return nil, iso7816.SWConditionsNotSatisfied
		}
		if !certMatches(v, &k.PublicKey) {
			return nil, iso7816.SWWrongData
		}
		put = func(tx *nvm.Tx) { tx.Put(keyCert, v) }
	case tagCAKeyID, tagOpsKeyID:
		if len(v) == 0 || len(v) > maxKeyIDLen {
			return nil, iso7816.SWWrongLength
		}
		key := keyCAKeyID
		if tag == tagOpsKeyID {
			key = keyOpsKeyID
		}
		put = func(tx *nvm.Tx) { tx.Put(key, v) }
	case tagOpsKey:
		if sw := fixed(pointLen); !sw.OK() {
			return nil, sw
		}
		if _, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), v); err != nil {
			return nil, iso7816.SWWrongData
		}
		put = func(tx *nvm.Tx) { tx.Put(keyOpsPub, v) }
	case tagPIN, tagPUK:
		if sw := fixed(pinBlockLen); !sw.OK() {
			return nil, sw
		}
		n, ok := pinBlockDigits(v)
		if !ok || tag == tagPUK && n != pukDigits {
			return nil, iso7816.SWWrongData
		}
		hashKey, triesKey, ref, tries := keyPINHash, keyPINTries, refPIN, pinTryLimit
		if tag == tagPUK {
			hashKey, triesKey, ref, tries = keyPUKHash, keyPUKTries, refPUK, pukTryLimit
		}
		salt := ctx.NVM.Get(keySalt)
		if salt == nil {
			salt = make([]byte, saltLen)
			if _, err := ctx.Rand.Read(salt); err != nil {
				return nil, iso7816.SWUnknown
			}
		}
		put = func(tx *nvm.Tx) {
			tx.Put(keySalt, salt)
			tx.Put(hashKey, secretHash(salt, byte(ref), v))
			tx.Put(triesKey, []byte{byte(tries)})
		}
	case tagBioTemplate:
		if sw := fixed(BioTemplateLen); !sw.OK() {
			return nil, sw
		}
		put = func(tx *nvm.Tx) {
			tx.Put(keyBioTmpl, v)
			tx.Put(keyBioTries, []byte{bioTryLimit})
			if tx.Get(keyBioThresh) == nil {
				tx.Put(keyBioThresh, []byte{DefaultBioThreshold})
			}
		}
	case tagBioThreshold:
		if sw := fixed(1); !sw.OK() {
			return nil, sw
		}
		if v[0] > MaxBioThreshold {
			return nil, iso7816.SWWrongData
		}
		put = func(tx *nvm.Tx) { tx.Put(keyBioThresh, v) }
	case tagPersoCurrency:
		if sw := fixed(3); !sw.OK() {
			return nil, sw
		}
		if _, err := money.ParseCurrency(string(v)); err != nil {
			return nil, iso7816.SWWrongData
		}
		put = func(tx *nvm.Tx) { tx.Put(keyPurseCurrency, v) }
	case tagPersoMax:
		if sw := fixed(8); !sw.OK() {
			return nil, sw
		}
		if m := binary.BigEndian.Uint64(v); m == 0 || m > math.MaxInt64 {
			return nil, iso7816.SWWrongData
		}
		put = func(tx *nvm.Tx) { tx.Put(keyPurseMax, v) }
	default:
		return nil, iso7816.SWRefDataNotFound
	}
	v = bytes.Clone(v)
	err := ctx.NVM.Update(func(tx *nvm.Tx) error {
		put(tx)
		return nil
	})
	if err != nil {
		return nil, commitSW(err)
	}
	return nil, iso7816.SWOK
}

// endPersonalization handles END PERSONALIZATION (80 F0 00 00): it checks
// that everything an operational card needs was written and makes the card
// operational for good.
func endPersonalization(ctx *card.Context, cmd iso7816.Command) ([]byte, iso7816.SW) {
	if cmd.P1 != 0 || cmd.P2 != 0 {
		return nil, iso7816.SWIncorrectP1P2
	}
	if len(cmd.Data) != 0 {
		return nil, iso7816.SWWrongLength
	}
	for _, key := range []string{keyPrivate, keyCert, keyCardNum, keyCAKeyID, keyOpsKeyID, keyOpsPub, keyPINHash, keyPUKHash, keyPurseCurrency} {
		if ctx.NVM.Get(key) == nil {
			return nil, iso7816.SWConditionsNotSatisfied
		}
	}
	k := privateKey(ctx)
	if k == nil || !certMatches(ctx.NVM.Get(keyCert), &k.PublicKey) || opsKey(ctx) == nil || cardNumber(ctx) == "" {
		return nil, iso7816.SWConditionsNotSatisfied
	}
	err := ctx.NVM.Update(func(tx *nvm.Tx) error {
		tx.Put(keyState, []byte{stateOperational})
		if tx.Get(keyPurseMax) == nil {
			tx.Put(keyPurseMax, binary.BigEndian.AppendUint64(nil, math.MaxInt64))
		}
		if tx.Get(keyCounter) == nil {
			tx.Put(keyCounter, make([]byte, 4))
		}
		if tx.Get(keyLogHead) == nil {
			tx.Put(keyLogHead, []byte{0, 0})
		}
		return nil
	})
	if err != nil {
		return nil, commitSW(err)
	}
	return nil, iso7816.SWOK
}

// certificate is the outline of an X.509 certificate (RFC 5280 §4.1),
// parsed only far enough to find the subject public key. The card does not
// check the issuer's signature: the issuer wrote the certificate.
type certificate struct {
	TBS    tbsCertificate
	SigAlg asn1.RawValue
	Sig    asn1.BitString
}

type tbsCertificate struct {
	Version    int `asn1:"optional,explicit,default:0,tag:0"`
	Serial     asn1.RawValue
	SigAlg     asn1.RawValue
	Issuer     asn1.RawValue
	Validity   asn1.RawValue
	Subject    asn1.RawValue
	PublicKey  subjectPublicKeyInfo
	IssuerUID  asn1.RawValue `asn1:"optional,tag:1"`
	SubjectUID asn1.RawValue `asn1:"optional,tag:2"`
	Extensions asn1.RawValue `asn1:"optional,explicit,tag:3"`
}

type subjectPublicKeyInfo struct {
	Algorithm asn1.RawValue
	Key       asn1.BitString
}

// ecP256Algorithm is the DER AlgorithmIdentifier { id-ecPublicKey,
// secp256r1 } (RFC 5480 §2.1.1).
var ecP256Algorithm = []byte{
	0x30, 0x13,
	0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01,
	0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07,
}

// certMatches reports whether der is one DER X.509 certificate whose subject
// public key is pub.
func certMatches(der []byte, pub *ecdsa.PublicKey) bool {
	var c certificate
	rest, err := asn1.Unmarshal(der, &c)
	if err != nil || len(rest) != 0 {
		return false
	}
	want, err := pub.Bytes()
	if err != nil {
		return false
	}
	spki := c.TBS.PublicKey
	return bytes.Equal(spki.Algorithm.FullBytes, ecP256Algorithm) &&
		spki.Key.BitLength == 8*len(want) && bytes.Equal(spki.Key.Bytes, want)
}
