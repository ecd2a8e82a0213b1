// Package auth will hold the server's authentication logic: issuing and
// checking challenges, validating card certificates and revocation,
// checking the card's signed answer (purpose, counter growth, how the
// holder was verified), and verifying the holder's PIN or biometric.
//
// Online PIN verification is in pin.go: a slow salted hash of the PIN and
// the store's try counter, decremented before every comparison.
// Server-side biometric matching (biometric.go, on with
// Config.ServerBiometric) follows the same protocol with the card's
// enrolled template: Hamming distance within a threshold, in constant time.
//
// It keeps no state of its own: records live behind the store package's
// interfaces, so that several server instances on one database behave as
// one. It must not import a store backend (tests may), the HTTP API, the
// device, the card or its applets, and it never logs a PIN.
//
// Service (service.go) is the authentication exchange a device listener
// and the HTTP API drive: NewSession for each device channel, Challenge
// for a ChallengeRequest (registering a card certificate the issuer CA
// signed), Verify for the card's AuthResponse, which also approves the
// card's oldest pending relying-party request and calls Config.Notify.
// The card checks of Challenge and the signature checks of Verify are
// also exported, for other exchanges that name a card and carry its
// signature (package purchase): CheckDevice, CheckCard (card known or
// registered from its certificate, not revoked or cloned, certificate
// valid) and VerifySignature (signature over the caller's own payload,
// counter, holder verification: online PIN block, server-side
// biometric), which returns a Verdict (card.go).
// Policies (which holder verification methods suffice) are strings in the
// store, read and written with ParsePolicy and FormatPolicy. Besides the
// store it holds only a bounded cache of checked certificates and, per
// Session, the card numbers it asked challenges for. It imports pki (CRL
// checks), wallet (only for AuthData, the bytes the card signs), pinblock,
// protocol and txn.
package auth
