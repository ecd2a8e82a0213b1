// Package card is the card operating system: power and reset, the ATR,
// SELECT by AID, logical channels, command chaining, GET RESPONSE, and
// dispatch to applets. Its memory model is ROM (Go constants and code), NVM
// (package nvm, persistent and atomic) and RAM (this package, cleared on every
// reset and power cycle).
//
// The card speaks status words only. It imports iso7816, nvm, txn, money and
// the standard library — never os, net or anything that logs.
//
// Choices where ISO/IEC 7816-4 leaves room (as of 2026-11-28):
//
//   - Classes: first interindustry (00–1F) and proprietary (80–9F) with the
//     same bit layout: b5 chaining, b4–b3 secure messaging (refused with
//     6882), b2–b1 logical channel. Every other class, FF included, gets 6E00.
//   - SELECT (00 A4) supports only P1 04 (by DF name), with P2 00 (return
//     FCI) or 0C (no response data); any other P1 or P2 gets 6A86. A name of
//     at least 5 bytes that is not a registered AID selects the one AID it is a
//     prefix of (partial DF name); no match, or more than one, gives 6A82. A
//     failed SELECT keeps the channel's current selection. A SELECT with P2
//     00 and no Le still returns its FCI (up to 256 bytes) with 9000, as a
//     T=1 YubiKey does: yubico-piv-tool relies on it. Any other command
//     without Le whose reply has data answers 61xx, as a T=0 card would.
//   - MANAGE CHANNEL (00 70): channels 0..3. Open with P1 00, P2 00 (the card
//     picks the lowest free channel and returns its number; 6A81 when none is
//     free) or P2 01..03 (6A86 when already open). Close with P1 80 and P2 the
//     channel, or P2 00 for the channel named in CLA; closing the basic
//     channel or a channel that is not open gives 6A86. A channel opened from
//     channel 0 has nothing selected; one opened from another channel
//     selects the same applet again. Commands on a closed channel get 6881.
//   - GET RESPONSE (00 C0, P1 P2 00 00) with nothing pending gives 6985.
//     Le absent counts as 256.
//   - A command with a valid class but no applet selected on its channel
//     gets 6D00, as would an instruction the applet does not know.
//   - Response data the applet returns with a status word other than 9000
//     is sent with that status word, cut to Ne (so dropped when the command
//     had no Le); it is never kept for GET RESPONSE.
package card

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sync"

	"cardlink/internal/card/nvm"
	"cardlink/internal/iso7816"
)

// Applet is an application on the card, selected by its AID.
type Applet interface {
	// AID returns the application identifier (DF name, 5 to 16 bytes).
	AID() []byte
	// Select is called when the applet is selected on a channel. It returns
	// the FCI template (tag 6F) sent in the SELECT response, and 9000, or a
	// status word refusing selection.
	Select(ctx *Context) ([]byte, iso7816.SW)
	// Process handles one command for the selected applet. cmd.CLA has its
	// logical-channel and chaining bits cleared (00 or 80 for cardlink
	// applets). Chained commands
	// arrive joined into one; the card OS splits long replies with 61xx.
	// A panic is answered with 6F00 and any open NVM transaction is
	// discarded.
	Process(ctx *Context, cmd iso7816.Command) ([]byte, iso7816.SW)
}

// Context is what an applet sees while handling one command.
type Context struct {
	// NVM is the card's persistent memory. Applets keep their keys under a
	// prefix of their own.
	NVM *nvm.Memory
	// RAM is this applet's transient memory, cleared on reset and power off.
	RAM *RAM
	// Channel is the logical channel the command came on (0..3).
	Channel int
	// Rand is the card's random source.
	Rand io.Reader
}

// RAM is an applet's transient memory: values are lost on reset and power
// off. It is not safe for concurrent use; the card serialises commands.
// The zero value is an empty RAM ready to use.
type RAM struct {
	vals map[string][]byte
}

// Get returns the value under key, or nil.
func (r *RAM) Get(key string) []byte { return r.vals[key] }

// Set stores value under key (not copied).
func (r *RAM) Set(key string, value []byte) {
	if r.vals == nil {
		r.vals = make(map[string][]byte)
	}
	r.vals[key] = value
}

// Delete removes key.
func (r *RAM) Delete(key string) { delete(r.vals, key) }

// Clear empties r.
func (r *RAM) Clear() { clear(r.vals) }

var (
	// ErrNotPowered is returned by Transmit when the card has no power.
	ErrNotPowered = errors.New("card: not powered")
)

// Config describes a card to build.
type Config struct {
	NVM        *nvm.Memory
	Applets    []Applet
	Rand       io.Reader // nil means crypto/rand
	Historical []byte    // ATR historical bytes; nil means the cardlink default
}

// defaultHistorical are the cardlink historical bytes (ISO/IEC 7816-4
// §8.1.1): category indicator 80, then COMPACT-TLV objects: card issuer's
// data (tag 5) "cardlink", and card capabilities (tag 7, §8.1.1.2.7):
// selection by full and partial DF name; data unit one byte; command
// chaining, extended Lc and Le, logical channels assigned by card and by
// host, four channels. 14 bytes of the 15 an ATR can hold.
var defaultHistorical = []byte{
	0x80,
	0x58, 'c', 'a', 'r', 'd', 'l', 'i', 'n', 'k',
	0x73, 0xC0, 0x01, 0xDB,
}

// Limits of this card OS.
const (
	numChannels = 4       // logical channels 0..3
	maxChained  = 8 << 10 // bytes a command chain may join to
	noApplet    = -1      // channel.selected when nothing is selected
	claChain    = 0x10    // CLA bit: more commands of a chain follow
	claSM       = 0x0C    // CLA bits: secure messaging indication
	claChannel  = 0x03    // CLA bits: logical channel number
	shortNe     = 256     // Ne assumed when a reply needs a length and had none
	aidMin      = 5       // shortest AID (and shortest partial DF name)
	aidMax      = 16      // longest AID
)

// Instructions the card OS handles itself (ISO/IEC 7816-4 §11).
const (
	insSelect        = 0xA4
	insManageChannel = 0x70
	insGetResponse   = 0xC0
)

// SELECT parameters (ISO/IEC 7816-4 §11.2.2, tables 63 and 64).
const (
	selectByName     = 0x04
	selectReturnFCI  = 0x00
	selectNoResponse = 0x0C
)

// MANAGE CHANNEL parameters (ISO/IEC 7816-4 §11.1.2).
const (
	manageOpen  = 0x00
	manageClose = 0x80
)

// channel is the state of one logical channel.
type channel struct {
	open     bool
	selected int    // index into Card.applets, or noApplet
	pending  []byte // reply data not yet fetched with GET RESPONSE
	chain    *chain // command chain being collected, or nil
}

// chain is a command chain being collected (ISO/IEC 7816-4 §5.3.3).
type chain struct {
	cla, ins, p1, p2 byte
	data             []byte
}

// reset drops everything but whether the channel is open.
func (ch *channel) reset() {
	ch.selected = noApplet
	ch.pending = nil
	ch.chain = nil
}

// Card is a powered or unpowered smart card. It is safe for concurrent use;
// commands are handled one at a time.
type Card struct {
	nvm     *nvm.Memory
	applets []Applet
	aids    [][]byte // copies of the applets' AIDs, same order
	rams    []RAM    // one per applet, same order
	rand    io.Reader
	atr     []byte

	mu       sync.Mutex
	powered  bool
	channels [numChannels]channel
}

// New builds a card; it starts unpowered. It fails when NVM is nil, an AID
// is not 5 to 16 bytes long or is registered twice, or the historical bytes
// do not fit an ATR.
func New(cfg Config) (*Card, error) {
	if cfg.NVM == nil {
		return nil, errors.New("card: no NVM")
	}
	c := &Card{
		nvm:     cfg.NVM,
		applets: append([]Applet(nil), cfg.Applets...),
		rams:    make([]RAM, len(cfg.Applets)),
		rand:    cfg.Rand,
	}
	if c.rand == nil {
		c.rand = rand.Reader
	}
	for i, a := range c.applets {
		aid := bytes.Clone(a.AID())
		if len(aid) < aidMin || len(aid) > aidMax {
			return nil, fmt.Errorf("card: applet %d: AID % X is %d bytes, want %d to %d", i, aid, len(aid), aidMin, aidMax)
		}
		for _, prev := range c.aids {
			if bytes.Equal(prev, aid) {
				return nil, fmt.Errorf("card: AID % X registered twice", aid)
			}
		}
		c.aids = append(c.aids, aid)
	}
	hist := cfg.Historical
	if hist == nil {
		hist = defaultHistorical
	}
	atr, err := iso7816.NewATR(hist).Bytes()
	if err != nil {
		return nil, fmt.Errorf("card: building ATR: %w", err)
	}
	c.atr = atr
	return c, nil
}

// PowerOn applies power (a cold reset): RAM is cleared, NVM is recovered
// from the medium, and the ATR is returned. If recovery fails the card stays
// unpowered and the error is returned.
func (c *Card) PowerOn() ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clearVolatile()
	c.powered = false
	if err := c.nvm.Recover(); err != nil {
		return nil, fmt.Errorf("card: recovering NVM: %w", err)
	}
	c.powered = true
	return c.ATR(), nil
}

// Reset is a warm reset: RAM and selections are cleared; the ATR is returned.
// It fails with ErrNotPowered when the card has no power.
func (c *Card) Reset() ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.powered {
		return nil, ErrNotPowered
	}
	c.clearVolatile()
	return c.ATR(), nil
}

// PowerOff removes power: RAM and selections are lost.
func (c *Card) PowerOff() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.powerOff()
}

func (c *Card) powerOff() {
	c.clearVolatile()
	c.powered = false
}

// clearVolatile clears every RAM and channel, leaving only channel 0 open.
func (c *Card) clearVolatile() {
	for i := range c.rams {
		c.rams[i].Clear()
	}
	for i := range c.channels {
		c.channels[i].reset()
		c.channels[i].open = i == 0
	}
}

// ATR returns the answer to reset (a new copy on every call).
func (c *Card) ATR() []byte { return bytes.Clone(c.atr) }

// Transmit handles one command APDU and returns the response APDU. Errors
// are only about power: ErrNotPowered, or an error wrapping
// nvm.ErrPowerLost when the NVM lost power during the command (the card is
// then unpowered, and no response was produced). Everything else is a status
// word.
func (c *Card) Transmit(apdu []byte) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.powered {
		return nil, ErrNotPowered
	}
	data, sw := c.handle(apdu)
	if err := c.nvm.Err(); errors.Is(err, nvm.ErrPowerLost) {
		c.powerOff()
		return nil, fmt.Errorf("card: handling command: %w", err)
	}
	resp := make([]byte, 0, len(data)+2)
	resp = append(resp, data...)
	return append(resp, sw.SW1(), sw.SW2()), nil
}

// handle decodes the class byte and runs chaining, the OS commands and
// applet dispatch for one command. c.mu is held.
func (c *Card) handle(apdu []byte) ([]byte, iso7816.SW) {
	cmd, err := iso7816.ParseCommand(apdu)
	if err != nil {
		return nil, iso7816.SWWrongLength
	}
	cla := cmd.CLA
	if cla&0x60 != 0 { // only 00–1F and 80–9F have this layout; FF too is out
		return nil, iso7816.SWCLANotSupported
	}
	if cla&claSM != 0 {
		return nil, iso7816.SWSecureMessaging
	}
	n := int(cla & claChannel)
	ch := &c.channels[n]
	if !ch.open {
		return nil, iso7816.SWChannelNotSupported
	}
	cmd.CLA = cla &^ (claChain | claChannel)
	if cmd.CLA != 0 || cmd.INS != insGetResponse || cla&claChain != 0 {
		ch.pending = nil // only GET RESPONSE may read it
	}
	if cla&claChain != 0 {
		return nil, c.collect(ch, cmd)
	}
	if ch.chain != nil {
		first := ch.chain
		ch.chain = nil
		if !first.matches(cmd) {
			return nil, iso7816.SWLastCommandExpected
		}
		if len(first.data)+len(cmd.Data) > maxChained {
			return nil, iso7816.SWWrongLength
		}
		cmd.Data = append(first.data, cmd.Data...)
	}
	if cmd.CLA == 0 {
		switch cmd.INS {
		case insGetResponse:
			return c.getResponse(ch, cmd)
		case insSelect:
			return c.selectApplet(n, cmd)
		case insManageChannel:
			return c.manageChannel(n, cmd)
		}
	}
	if cmd.INS&0xF0 == 0x60 || cmd.INS&0xF0 == 0x90 { // invalid INS (7816-4 §5.1.2)
		return nil, iso7816.SWINSNotSupported
	}
	if ch.selected == noApplet {
		return nil, iso7816.SWINSNotSupported
	}
	idx := ch.selected
	data, sw := c.call(idx, n, func(a Applet, ctx *Context) ([]byte, iso7816.SW) {
		return a.Process(ctx, cmd)
	})
	return c.reply(ch, cmd.Ne, data, sw)
}

// collect adds one non-final part of a command chain to ch.
func (c *Card) collect(ch *channel, cmd iso7816.Command) iso7816.SW {
	if ch.chain == nil {
		ch.chain = &chain{cla: cmd.CLA, ins: cmd.INS, p1: cmd.P1, p2: cmd.P2}
	} else if !ch.chain.matches(cmd) {
		ch.chain = nil
		return iso7816.SWLastCommandExpected
	}
	if len(ch.chain.data)+len(cmd.Data) > maxChained {
		ch.chain = nil
		return iso7816.SWWrongLength
	}
	ch.chain.data = append(ch.chain.data, cmd.Data...)
	return iso7816.SWOK
}

// matches reports whether cmd continues the chain (same header).
func (ch *chain) matches(cmd iso7816.Command) bool {
	return ch.cla == cmd.CLA && ch.ins == cmd.INS && ch.p1 == cmd.P1 && ch.p2 == cmd.P2
}

// reply shapes an applet's answer to the command's Ne (ISO/IEC 7816-4
// §5.3.4): data beyond Ne is kept on ch for GET RESPONSE and announced with
// 61xx.
func (c *Card) reply(ch *channel, ne int, data []byte, sw iso7816.SW) ([]byte, iso7816.SW) {
	if len(data) == 0 {
		return nil, sw
	}
	if !sw.OK() {
		return data[:min(len(data), ne)], sw
	}
	if len(data) <= ne {
		return data, sw
	}
	ch.pending = bytes.Clone(data[ne:]) // the applet may reuse its buffer
	return data[:ne], iso7816.SWBytesRemaining(len(ch.pending))
}

// getResponse sends the next part of the pending reply (7816-4 §11.5.6).
func (c *Card) getResponse(ch *channel, cmd iso7816.Command) ([]byte, iso7816.SW) {
	if cmd.P1 != 0 || cmd.P2 != 0 {
		ch.pending = nil
		return nil, iso7816.SWIncorrectP1P2
	}
	if len(ch.pending) == 0 {
		return nil, iso7816.SWConditionsNotSatisfied
	}
	ne := cmd.Ne
	if ne == 0 {
		ne = shortNe
	}
	data := ch.pending
	ch.pending = nil
	return c.reply(ch, ne, data, iso7816.SWOK)
}

// selectApplet handles SELECT by DF name (7816-4 §11.2.2) on channel n.
func (c *Card) selectApplet(n int, cmd iso7816.Command) ([]byte, iso7816.SW) {
	if cmd.P1 != selectByName || (cmd.P2 != selectReturnFCI && cmd.P2 != selectNoResponse) {
		return nil, iso7816.SWIncorrectP1P2
	}
	idx := c.lookup(cmd.Data)
	if idx == noApplet {
		return nil, iso7816.SWNotFound
	}
	fci, sw := c.call(idx, n, func(a Applet, ctx *Context) ([]byte, iso7816.SW) {
		return a.Select(ctx)
	})
	if !sw.OK() {
		return nil, sw
	}
	ch := &c.channels[n]
	ch.selected = idx
	if cmd.P2 == selectNoResponse {
		return nil, sw
	}
	// A SELECT without Le still gets its FCI at once, as from a T=1
	// YubiKey: yubico-piv-tool sends it that way and treats 61xx as a
	// failure. Other commands without Le keep the 61xx rule.
	ne := cmd.Ne
	if ne == 0 {
		ne = shortNe
	}
	return c.reply(ch, ne, fci, sw)
}

// lookup finds the applet a DF name selects: an exact match, or else the only
// AID that starts with a name of at least aidMin bytes.
func (c *Card) lookup(name []byte) int {
	for i, aid := range c.aids {
		if bytes.Equal(aid, name) {
			return i
		}
	}
	if len(name) < aidMin {
		return noApplet
	}
	found := noApplet
	for i, aid := range c.aids {
		if bytes.HasPrefix(aid, name) {
			if found != noApplet {
				return noApplet // ambiguous
			}
			found = i
		}
	}
	return found
}

// manageChannel handles MANAGE CHANNEL (7816-4 §11.1.2) issued on channel n.
func (c *Card) manageChannel(n int, cmd iso7816.Command) ([]byte, iso7816.SW) {
	if len(cmd.Data) != 0 {
		return nil, iso7816.SWWrongLength
	}
	switch cmd.P1 {
	case manageOpen:
		target := int(cmd.P2)
		if target == 0 {
			for i := 1; i < numChannels; i++ {
				if !c.channels[i].open {
					target = i
					break
				}
			}
			if target == 0 {
				return nil, iso7816.SWFuncNotSupported
			}
		} else if target >= numChannels || c.channels[target].open {
			return nil, iso7816.SWIncorrectP1P2
		}
		nc := &c.channels[target]
		nc.reset()
		nc.open = true
		if from := c.channels[n].selected; n != 0 && from != noApplet {
			_, sw := c.call(from, target, func(a Applet, ctx *Context) ([]byte, iso7816.SW) {
				return a.Select(ctx)
			})
			if sw.OK() {
				nc.selected = from
			}
		}
		if cmd.P2 != 0 {
			return nil, iso7816.SWOK
		}
		return c.reply(&c.channels[n], cmd.Ne, []byte{byte(target)}, iso7816.SWOK)
	case manageClose:
		target := int(cmd.P2)
		if target == 0 {
			target = n
		}
		if target == 0 || target >= numChannels || !c.channels[target].open {
			return nil, iso7816.SWIncorrectP1P2
		}
		c.channels[target].reset()
		c.channels[target].open = false
		return nil, iso7816.SWOK
	default:
		return nil, iso7816.SWIncorrectP1P2
	}
}

// call runs fn for applet idx on channel n, turning a panic into 6F00. A
// panic unwinds through any nvm.Update in progress, which then writes
// nothing.
func (c *Card) call(idx, n int, fn func(Applet, *Context) ([]byte, iso7816.SW)) (data []byte, sw iso7816.SW) {
	defer func() {
		if recover() != nil {
			data, sw = nil, iso7816.SWUnknown
		}
	}()
	ctx := &Context{NVM: c.nvm, RAM: &c.rams[idx], Channel: n, Rand: c.rand}
	return fn(c.applets[idx], ctx)
}
