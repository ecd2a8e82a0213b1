package auth

import (
	"fmt"
	"strings"

	"cardlink/internal/protocol"
	"cardlink/internal/txn"
)

// policyNames are the words of a policy string, indexed by txn.CVM, in the
// order FormatPolicy writes them.
var policyNames = [...]string{
	txn.CVMNone:       "none",
	txn.CVMOfflinePIN: "offline-pin",
	txn.CVMOnlinePIN:  "online-pin",
	txn.CVMBiometric:  "biometric",
}

// maxPolicy bounds the length of a policy string ParsePolicy reads: every
// method once with commas and some white space.
const maxPolicy = 128

// ParsePolicy parses a policy as kept in store.RelyingParty.Policy and
// store.AuthRequest.Policy: a comma-separated list of the holder
// verification methods that suffice, each "offline-pin", "online-pin",
// "biometric" or "none" (no holder verification: possession of the card
// alone), with optional white space around each. The empty string (or
// only white space) means the server's default and gives the empty set.
// It returns an error for an unknown or empty method, a method listed
// twice, or a string over 128 bytes.
func ParsePolicy(s string) (protocol.CVMSet, error) {
	if len(s) > maxPolicy {
		return 0, fmt.Errorf("parsing policy: %d bytes, want at most %d", len(s), maxPolicy)
	}
	if strings.TrimSpace(s) == "" {
		return 0, nil
	}
	var set protocol.CVMSet
	for word := range strings.SplitSeq(s, ",") {
		word = strings.TrimSpace(word)
		c, ok := cvmByName(word)
		if !ok {
			if word == "" {
				return 0, fmt.Errorf("parsing policy: empty method")
			}
			return 0, fmt.Errorf("parsing policy: unknown method %q (want offline-pin, online-pin, biometric or none)", word)
		}
		if set.Has(c) {
			return 0, fmt.Errorf("parsing policy: method %q listed twice", word)
		}
		set |= protocol.CVMs(c)
	}
	return set, nil
}

// FormatPolicy is the inverse of ParsePolicy: the methods of set in the
// order none, offline-pin, online-pin, biometric, joined by commas; "" for
// the empty set. Bits of unknown methods are left out.
func FormatPolicy(set protocol.CVMSet) string {
	var words []string
	for c, name := range policyNames {
		if set.Has(txn.CVM(c)) {
			words = append(words, name)
		}
	}
	return strings.Join(words, ",")
}

func cvmByName(word string) (txn.CVM, bool) {
	for c, name := range policyNames {
		if word == name {
			return txn.CVM(c), true
		}
	}
	return 0, false
}

// cvmName is the policy word for c, as Approval.CVM carries it.
func cvmName(c txn.CVM) string {
	if int(c) < len(policyNames) {
		return policyNames[c]
	}
	return c.String()
}
