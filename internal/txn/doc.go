// Package txn is the one canonical encoding of what a card signs, shared by
// card, device and server: the transaction a holder approves, the envelope
// every card signature covers (purpose, card number, counter, how the holder
// was verified), the issuer-signed purse load and the issuer-signed e-good.
//
// Encodings are strict BER-TLV (package iso7816): fixed field order, each
// field once, minimal lengths, so that Parse(b) succeeds only if
// Encode(Parse(b)) == b. It imports only iso7816, money and the standard
// library, because the card uses it.
//
// # Byte layouts
//
// Every structure is one constructed private-class template holding
// context-specific primitive fields, always all present, in the order listed,
// each exactly once, lengths in minimal BER form (ISO/IEC 7816-4 §6.3,
// ISO/IEC 8825-1 §8.1.3). Integers are unsigned big-endian of the fixed size
// given. Text is 1..n bytes of UTF-8 in which every rune is printable
// (unicode.IsPrint: letters, marks, numbers, punctuation, symbols and the
// ASCII space; no control, format or private-use characters). Card numbers
// are 16 decimal digits with a valid Luhn check digit, packed BCD in 8 bytes
// as in EMV tag 5A. Currency is the 3 ASCII letters of an ISO 4217 code that
// package money knows.
//
// Transaction (Encode, Parse), template E1:
//
//	E1 len
//	   80 10 id         16 bytes, server's transaction id
//	   81 len merchant  1..40 bytes text
//	   82 len item      1..64 bytes text
//	   83 08 amount     8 bytes, minor units, 1..2^63-1
//	   84 03 currency   3 ASCII letters
//	   85 08 time       8 bytes, Unix seconds UTC, 0..253402300799 (year 9999)
//	   86 len nonce     16..32 bytes
//
// Envelope (Bytes, ParseEnvelope): the 15 ASCII bytes "cardlink/sig/v1"
// followed by template E2:
//
//	"cardlink/sig/v1"
//	E2 len
//	   80 01 purpose    1 byte, 1..4 (Purpose)
//	   81 08 card       8 bytes packed BCD
//	   82 04 counter    4 bytes
//	   83 01 cvm        1 byte, 0..3 (CVM)
//	   84 len payload   1..1024 bytes
//
// Load (Bytes): the 16 ASCII bytes "cardlink/load/v1" followed by template E3:
//
//	"cardlink/load/v1"
//	E3 len
//	   80 08 card       8 bytes packed BCD
//	   81 04 seq        4 bytes, 1..2^32-1
//	   82 08 amount     8 bytes, minor units, 1..2^63-1
//	   83 03 currency   3 ASCII letters
//
// Item (Bytes): the 16 ASCII bytes "cardlink/item/v1" followed by template E4:
//
//	"cardlink/item/v1"
//	E4 len
//	   80 08 card       8 bytes packed BCD
//	   81 10 id         16 bytes
//	   82 01 kind       1 byte, 1..4 (ItemKind)
//	   83 len title     1..40 bytes text
//	   84 len content   0..1024 bytes (84 00 when empty)
//
// The signed forms (LOAD and STORE ITEM command data) carry the template
// without its prefix, and the issuer's signature, in templates E5 and E6:
//
//	E5 len  E3 ... (as above)  9E len signature
//	E6 len  E4 ... (as above)  9E len signature
//
// The signature is ECDSA P-256 over SHA-256 of Bytes() (prefix included),
// in ASN.1 DER (SEQUENCE of two positive INTEGERs, 8..80 bytes). The
// distinct prefixes make a signature over one structure useless as a
// signature over another.
package txn
