// Package reader is the host's view of card readers: a Reader is a slot that
// may hold a card, a Conn is a session with a powered card. Drivers: virtual
// (the in-process card), and later pcsc (pcscd) and vpcd (serving the virtual
// card to pcscd). Everything a driver carries is bytes in, bytes out, plus
// card presence and reset.
//
// Exchange is the one place where status words become Go errors.
package reader

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"cardlink/internal/iso7816"
)

var (
	// ErrNoCard means the reader holds no card.
	ErrNoCard = errors.New("reader: no card present")
	// ErrCardRemoved means the card went away (or lost power) during the session.
	ErrCardRemoved = errors.New("reader: card removed")
)

// Reader is a card slot.
type Reader interface {
	// Name identifies the reader (as pcscd would list it).
	Name() string
	// Connect powers the card and opens a session. It fails with ErrNoCard
	// when the slot is empty.
	Connect(ctx context.Context) (Conn, error)
}

// Conn is a session with a powered card. It is not safe for concurrent use.
type Conn interface {
	// ATR returns the card's answer to reset.
	ATR() []byte
	// Transmit sends one command APDU and returns the response APDU
	// including SW1 SW2. Errors are transport errors only (ErrCardRemoved,
	// context cancellation), never status words.
	Transmit(ctx context.Context, apdu []byte) ([]byte, error)
	// Reset warm-resets the card; the card's RAM and selections are lost.
	Reset(ctx context.Context) error
	// Close ends the session and powers the card down.
	Close() error
}

// Watcher is implemented by readers that report card presence.
type Watcher interface {
	// Present reports whether a card is in the slot.
	Present(ctx context.Context) (bool, error)
	// Wait blocks until presence differs from present, or ctx ends.
	Wait(ctx context.Context, present bool) error
}

// Limits of Exchange.
const (
	// maxChainPart is the data a short command carries (ISO/IEC 7816-4 §5.1).
	maxChainPart = 255
	// maxGetResponse bounds the GET RESPONSE rounds of one Exchange: 1024
	// rounds of up to 256 bytes is 256 KiB, far above any reply a cardlink
	// card or a PIV card sends, and stops a card that answers 61xx forever.
	maxGetResponse = 1024
	// insGetResponse is GET RESPONSE (ISO/IEC 7816-4 §11.5.6).
	insGetResponse = 0xC0
	// claChain is the CLA bit announcing more commands of a chain.
	claChain = 0x10
)

// Exchange sends cmd on c and returns the response data. It follows 61xx
// with GET RESPONSE until the whole reply is read, resends once with the
// length a 6Cxx names, and splits Data over 255 bytes into a command chain
// (CLA bit 0x10) unless cmd.Extended is set. A status word other than 9000 is
// returned as a *iso7816.StatusError (with whatever data came with it).
//
// GET RESPONSE is sent in the interindustry class on cmd's logical channel.
// Exchange gives up after 1024 GET RESPONSE rounds. Transport errors from c
// are returned wrapped.
func Exchange(ctx context.Context, c Conn, cmd iso7816.Command) ([]byte, error) {
	if !cmd.Extended {
		for len(cmd.Data) > maxChainPart {
			part := cmd
			part.CLA |= claChain
			part.Data = cmd.Data[:maxChainPart]
			part.Ne = 0
			resp, err := transmit(ctx, c, part)
			if err != nil {
				return nil, err
			}
			if !resp.SW.OK() {
				return resp.Data, &iso7816.StatusError{SW: resp.SW}
			}
			cmd.Data = cmd.Data[maxChainPart:]
		}
	}
	resp, err := transmit(ctx, c, cmd)
	if err != nil {
		return nil, err
	}
	data := resp.Data
	getResponse := iso7816.Command{CLA: interindustry(cmd.CLA), INS: insGetResponse}
	for rounds := 0; resp.SW.SW1() == 0x61; rounds++ {
		if rounds == maxGetResponse {
			return nil, fmt.Errorf("reader: reading response: more than %d GET RESPONSE rounds", maxGetResponse)
		}
		getResponse.Ne = neFor(resp.SW.SW2())
		if resp, err = transmit(ctx, c, getResponse); err != nil {
			return nil, err
		}
		data = append(data, resp.Data...)
	}
	if !resp.SW.OK() {
		return data, &iso7816.StatusError{SW: resp.SW}
	}
	return data, nil
}

// transmit sends one command and parses the response, resending once with
// the Ne a 6Cxx (wrong Le, ISO/IEC 7816-4 §5.6) names.
func transmit(ctx context.Context, c Conn, cmd iso7816.Command) (iso7816.Response, error) {
	resp, err := transmitOnce(ctx, c, cmd)
	if err != nil || resp.SW.SW1() != 0x6C {
		return resp, err
	}
	cmd.Ne = neFor(resp.SW.SW2())
	return transmitOnce(ctx, c, cmd)
}

func transmitOnce(ctx context.Context, c Conn, cmd iso7816.Command) (iso7816.Response, error) {
	apdu, err := cmd.Bytes()
	if err != nil {
		return iso7816.Response{}, fmt.Errorf("reader: encoding command: %w", err)
	}
	b, err := c.Transmit(ctx, apdu)
	if err != nil {
		return iso7816.Response{}, fmt.Errorf("reader: transmitting command %02X %02X: %w", cmd.CLA, cmd.INS, err)
	}
	resp, err := iso7816.ParseResponse(b)
	if err != nil {
		return iso7816.Response{}, fmt.Errorf("reader: parsing response: %w", err)
	}
	return resp, nil
}

// neFor returns the Ne that SW2 of 61xx or 6Cxx names (00 means 256).
func neFor(sw2 byte) int {
	if sw2 == 0 {
		return 256
	}
	return int(sw2)
}

// interindustry returns the CLA of an interindustry command (such as GET
// RESPONSE) on the logical channel that cla names (ISO/IEC 7816-4 §5.4.1):
// channels 0–3 in the first interindustry class, 4–19 in the further one.
func interindustry(cla byte) byte {
	if cla&0x40 != 0 && cla != 0xFF {
		return 0x40 | cla&0x0F
	}
	return cla & 0x03
}

// OpenFunc opens the reader a URI names; rest is the URI after "scheme:".
type OpenFunc func(ctx context.Context, rest string) (Reader, error)

var (
	driversMu sync.Mutex
	drivers   = map[string]OpenFunc{}
)

// Register makes a driver available to Open under scheme (as in
// "virtual:/path/card.nvm" or "pcsc:Yubico YubiKey"). Drivers call it from
// init or the wiring code does before Open. It panics if scheme is empty,
// contains ':' or is registered twice, or open is nil: those are programming
// errors. It is safe for concurrent use.
func Register(scheme string, open func(ctx context.Context, rest string) (Reader, error)) {
	if scheme == "" || strings.Contains(scheme, ":") || open == nil {
		panic(fmt.Sprintf("reader: Register(%q) with bad scheme or nil open", scheme))
	}
	driversMu.Lock()
	defer driversMu.Unlock()
	if _, dup := drivers[scheme]; dup {
		panic(fmt.Sprintf("reader: Register(%q) called twice", scheme))
	}
	drivers[scheme] = open
}

// Schemes returns the registered schemes, sorted.
func Schemes() []string {
	driversMu.Lock()
	defer driversMu.Unlock()
	names := make([]string, 0, len(drivers))
	for name := range drivers {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// Open opens the reader uri names, "scheme:rest", with the driver registered
// for scheme. An unknown scheme gives an error listing the known ones; the
// driver's own error is returned wrapped.
func Open(ctx context.Context, uri string) (Reader, error) {
	scheme, rest, ok := strings.Cut(uri, ":")
	if !ok || scheme == "" {
		return nil, fmt.Errorf("reader: opening %q: want scheme:name (known schemes: %s)", uri, known())
	}
	driversMu.Lock()
	open := drivers[scheme]
	driversMu.Unlock()
	if open == nil {
		return nil, fmt.Errorf("reader: opening %q: unknown scheme %q (known schemes: %s)", uri, scheme, known())
	}
	r, err := open(ctx, rest)
	if err != nil {
		return nil, fmt.Errorf("reader: opening %q: %w", uri, err)
	}
	return r, nil
}

func known() string {
	names := Schemes()
	if len(names) == 0 {
		return "none registered"
	}
	return strings.Join(names, ", ")
}
