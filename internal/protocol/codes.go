package protocol

import "strconv"

// Code is a protocol error code, carried in Error and AuthResult messages.
// Codes are append-only: a number, once given a meaning, keeps it forever
// and is never reused (TestCodeNumbers pins them). Code 0 means success
// and is valid only in AuthResult.
type Code uint16

// The codes. Append new ones at the end with the next number.
const (
	CodeOK                   Code = 0  // success (AuthResult only)
	CodeInternal             Code = 1  // the server failed; try again later
	CodeMalformed            Code = 2  // a message did not decode or validate
	CodeUnsupportedVersion   Code = 3  // the protocol version is not spoken
	CodeUnexpectedMessage    Code = 4  // a message type out of turn
	CodeTooLarge             Code = 5  // a message over MaxSize
	CodeBusy                 Code = 6  // the server is overloaded; try again later
	CodeCertificateNeeded    Code = 7  // the server lacks the card certificate: send it
	CodeCertificateInvalid   Code = 8  // chain, validity period or key usage failed
	CodeCardUnknown          Code = 9  // no such card was issued
	CodeCardRevoked          Code = 10 // the card is revoked
	CodeDeviceRevoked        Code = 11 // the device is revoked
	CodeChallengeUnknown     Code = 12 // no such challenge, already used, or for another session or card
	CodeChallengeExpired     Code = 13 // the challenge's lifetime passed
	CodeSignatureInvalid     Code = 14 // the card signature does not verify (wrong purpose, data or key)
	CodeCounterNotIncreasing Code = 15 // the card counter did not grow: a cloned card
	CodeCVMNotAccepted       Code = 16 // the holder verification method does not satisfy the policy
	CodePINIncorrect         Code = 17 // online PIN wrong; AuthResult.TriesLeft says how many remain
	CodePINBlocked           Code = 18 // online PIN locked out
	CodeBiometricMismatch    Code = 19 // server-side biometric match failed
	CodeTransactionUnknown   Code = 20 // no such pending transaction
	CodeTransactionDeclined  Code = 21 // the server declined the transaction (limit, funds)
	CodeHolderDeclined       Code = 22 // the card holder declined on the device
	CodeTransactionExpired   Code = 23 // the transaction's deadline passed
	CodeInsufficientFunds    Code = 24 // the holder's account cannot pay it
	CodePurseState           Code = 25 // the purse state the device reported does not match the server's loads
)

// codeText are short, user-safe texts: they may be shown on the device.
var codeText = [...]string{
	CodeOK:                   "ok",
	CodeInternal:             "internal server error",
	CodeMalformed:            "malformed message",
	CodeUnsupportedVersion:   "unsupported protocol version",
	CodeUnexpectedMessage:    "unexpected message",
	CodeTooLarge:             "message too large",
	CodeBusy:                 "server busy",
	CodeCertificateNeeded:    "card certificate needed",
	CodeCertificateInvalid:   "card certificate not valid",
	CodeCardUnknown:          "card unknown",
	CodeCardRevoked:          "card revoked",
	CodeDeviceRevoked:        "device revoked",
	CodeChallengeUnknown:     "challenge unknown or used",
	CodeChallengeExpired:     "challenge expired",
	CodeSignatureInvalid:     "card signature not valid",
	CodeCounterNotIncreasing: "card counter did not increase",
	CodeCVMNotAccepted:       "verification method not accepted",
	CodePINIncorrect:         "PIN incorrect",
	CodePINBlocked:           "PIN blocked",
	CodeBiometricMismatch:    "biometric not matched",
	CodeTransactionUnknown:   "transaction unknown",
	CodeTransactionDeclined:  "transaction declined",
	CodeHolderDeclined:       "declined by card holder",
	CodeTransactionExpired:   "transaction expired",
	CodeInsufficientFunds:    "insufficient funds",
	CodePurseState:           "purse out of step with the server",
}

// String returns the code's short, user-safe text, or "Code(n)" for a code
// this build does not know (a newer peer's).
func (c Code) String() string {
	if int(c) < len(codeText) {
		return codeText[c]
	}
	return "Code(" + strconv.Itoa(int(c)) + ")"
}
