package line

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"cardlink/internal/audio"
	"cardlink/internal/audio/impair"
)

// The wire protocol (docs/telephone-line.md has the full table). Every
// message is a 3-byte header, type (1 byte) and payload length (uint16,
// little-endian), then the payload. All integers are little-endian.
const (
	version = 1

	headerLen  = 3
	maxFrame   = 1024            // samples in one AUDIO message
	maxPayload = 24 + 2*maxFrame // the largest payload (switch AUDIO)
	maxNumber  = 20              // digits in a number
	maxText    = 200             // bytes of text in END
	cfgLen     = 1 + 4 + 4 + 4 + 4 + 4 + 4 + 8
	maxWindow  = 2 * 8000              // samples a party may write ahead: 2 s
	frameLen   = 160                   // samples per tick: 20 ms
	tickLine   = 20 * time.Millisecond // line time of one frame
)

// Message types: party to switch, then switch to party.
const (
	msgRegister   = 0x01
	msgDial       = 0x02
	msgAnswer     = 0x03
	msgHangup     = 0x04
	msgAudio      = 0x05
	msgRegistered = 0x81
	msgRinging    = 0x82
	msgRing       = 0x83
	msgConnected  = 0x84
	msgRxAudio    = 0x85
	msgEnd        = 0x86
)

// Cause says why a call ended, or why it never started; it travels in the
// END message.
type Cause uint8

// The causes, in END messages; append-only.
const (
	CauseHangup       Cause = 1 // a party hung up (or vanished)
	CauseBusy         Cause = 2 // every line of the number is in a call, or the callee declined
	CauseNoSuchNumber Cause = 3 // nobody registered the number
	CauseNoAnswer     Cause = 4 // the callee did not answer in time
	CauseShutdown     Cause = 5 // the switch is stopping
	CauseProtocol     Cause = 6 // a party broke the protocol; the text says how
)

var causeNames = map[Cause]string{
	CauseHangup:       "hangup",
	CauseBusy:         "busy",
	CauseNoSuchNumber: "no such number",
	CauseNoAnswer:     "no answer",
	CauseShutdown:     "shutdown",
	CauseProtocol:     "protocol error",
}

func (c Cause) String() string {
	if s, ok := causeNames[c]; ok {
		return s
	}
	return fmt.Sprintf("cause(%d)", uint8(c))
}

// ErrMessage is wrapped by every error for a message that breaks the wire
// format.
var ErrMessage = errors.New("line: malformed message")

func msgErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMessage, fmt.Sprintf(format, args...))
}

// message is one decoded message; which fields count depends on typ.
type message struct {
	typ     byte
	number  string         // REGISTER, DIAL: the number; RING: the caller's number
	from    string         // DIAL: caller ID ("" for none)
	window  uint32         // REGISTER, DIAL, CONNECTED: samples a party may write ahead (0: the switch's default)
	fwd     *impair.Config // DIAL: caller to callee, nil for the switch's default
	back    *impair.Config // DIAL: callee to caller
	callID  uint64         // RINGING, RING, CONNECTED, ANSWER, HANGUP
	frame   uint16         // CONNECTED: samples per frame
	rxPos   uint64         // RX AUDIO: stream index of the first sample
	linePos uint64         // RX AUDIO: the line's clock after this frame, in samples taken from each sender
	txPos   uint64         // RX AUDIO: samples the receiver wrote that the line has taken
	samples []int16        // AUDIO, RX AUDIO
	cause   Cause          // END
	text    string         // END
}

// reader reads messages from a connection into a reused buffer.
type reader struct {
	r   io.Reader
	buf [headerLen + maxPayload]byte
}

// read reads and parses one message. Errors are the connection's or wrap
// ErrMessage.
func (r *reader) read() (message, error) {
	h := r.buf[:headerLen]
	if _, err := io.ReadFull(r.r, h); err != nil {
		return message{}, err
	}
	n := int(binary.LittleEndian.Uint16(h[1:3]))
	if n > maxPayload {
		return message{}, msgErr("payload of %d bytes (at most %d)", n, maxPayload)
	}
	p := r.buf[headerLen : headerLen+n]
	if _, err := io.ReadFull(r.r, p); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return message{}, err
	}
	return parse(h[0], p)
}

// parse decodes the payload p of a message of type typ, strictly: exact
// lengths, known flags only, values in range. The samples alias nothing:
// parse copies them.
func parse(typ byte, p []byte) (message, error) {
	m := message{typ: typ}
	d := decoder{p: p}
	switch typ {
	case msgRegister:
		d.version()
		m.number = d.number(false)
		m.window = d.window()
	case msgDial:
		d.version()
		m.number = d.number(false)
		m.from = d.number(true)
		m.window = d.window()
		has := d.u8()
		if has&^3 != 0 {
			d.fail("unknown impairment flags %#x", has)
		}
		if has&1 != 0 {
			m.fwd = d.config()
		}
		if has&2 != 0 {
			m.back = d.config()
		}
	case msgAnswer, msgHangup:
		m.callID = d.u64()
	case msgRegistered:
	case msgAudio:
		m.samples = d.samples(1)
	case msgRinging:
		m.callID = d.u64()
	case msgRing:
		m.callID = d.u64()
		m.number = d.number(true)
	case msgConnected:
		m.callID = d.u64()
		m.window = d.u32()
		if m.window == 0 || m.window > maxWindow {
			d.fail("window of %d samples", m.window)
		}
		m.frame = d.u16()
		if m.frame == 0 || m.frame > maxFrame {
			d.fail("frame of %d samples", m.frame)
		}
	case msgRxAudio:
		m.rxPos = d.u64()
		m.linePos = d.u64()
		m.txPos = d.u64()
		if m.rxPos > math.MaxInt64 || m.linePos > math.MaxInt64 || m.txPos > math.MaxInt64 {
			d.fail("position beyond 2^63")
		}
		m.samples = d.samples(0)
	case msgEnd:
		m.cause = Cause(d.u8())
		if _, ok := causeNames[m.cause]; !ok {
			d.fail("unknown cause %d", m.cause)
		}
		n := int(d.u8())
		if n > maxText {
			d.fail("text of %d bytes", n)
		}
		t := d.bytes(n)
		for _, c := range t {
			if c < 0x20 || c > 0x7e {
				d.fail("text byte %#x is not printable ASCII", c)
				break
			}
		}
		m.text = string(t)
	default:
		return message{}, msgErr("unknown type %#02x", typ)
	}
	if d.err == nil && len(d.p) != 0 {
		d.fail("%d trailing bytes", len(d.p))
	}
	if d.err != nil {
		return message{}, fmt.Errorf("type %#02x: %w", typ, d.err)
	}
	return m, nil
}

type decoder struct {
	p   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = msgErr(format, args...)
	}
}

func (d *decoder) bytes(n int) []byte {
	if d.err != nil {
		return nil
	}
	if len(d.p) < n {
		d.fail("short payload")
		return nil
	}
	b := d.p[:n]
	d.p = d.p[n:]
	return b
}

func (d *decoder) u8() uint8 {
	if b := d.bytes(1); b != nil {
		return b[0]
	}
	return 0
}

func (d *decoder) u16() uint16 {
	if b := d.bytes(2); b != nil {
		return binary.LittleEndian.Uint16(b)
	}
	return 0
}

func (d *decoder) u32() uint32 {
	if b := d.bytes(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (d *decoder) u64() uint64 {
	if b := d.bytes(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

func (d *decoder) version() {
	if v := d.u8(); d.err == nil && v != version {
		d.fail("protocol version %d (this switch speaks %d)", v, version)
	}
}

func (d *decoder) window() uint32 {
	w := d.u32()
	if w > maxWindow {
		d.fail("window of %d samples (at most %d)", w, maxWindow)
	}
	return w
}

// number reads a length-prefixed telephone number: 1 to 20 of 0-9 * #,
// or nothing if empty is allowed.
func (d *decoder) number(empty bool) string {
	n := int(d.u8())
	if d.err != nil {
		return ""
	}
	if n > maxNumber || n == 0 && !empty {
		d.fail("number of %d characters (1 to %d)", n, maxNumber)
		return ""
	}
	b := d.bytes(n)
	if err := checkNumber(string(b)); err != nil && n > 0 {
		d.fail("%v", err)
		return ""
	}
	return string(b)
}

// ErrNumber is wrapped by the errors for a string that is not a
// telephone number.
var ErrNumber = errors.New("line: not a telephone number")

// checkNumber reports whether s is a telephone number: 1 to 20 characters
// of 0-9, * and #.
func checkNumber(s string) error {
	if len(s) == 0 || len(s) > maxNumber {
		return fmt.Errorf("%w: %q: want 1 to %d characters", ErrNumber, s, maxNumber)
	}
	for _, c := range []byte(s) {
		if !(c >= '0' && c <= '9' || c == '*' || c == '#') {
			return fmt.Errorf("%w: %q: want only 0-9, * and #", ErrNumber, s)
		}
	}
	return nil
}

func (d *decoder) samples(least int) []int16 {
	if len(d.p)%2 != 0 {
		d.fail("odd audio payload of %d bytes", len(d.p))
		return nil
	}
	n := len(d.p) / 2
	if n < least || n > maxFrame {
		d.fail("%d samples in a frame (%d to %d)", n, least, maxFrame)
		return nil
	}
	s := make([]int16, n)
	for i := range s {
		s[i] = int16(binary.LittleEndian.Uint16(d.p[2*i:]))
	}
	d.p = d.p[2*n:]
	return s
}

// Limits of the impairments on the wire, in the wire's units.
const (
	maxAttenuationCdB = 120_00    // 120 dB
	minLevelCdB       = -200_00   // -200 dBFS
	maxDriftCppm      = 50_000_00 // impair's ±50,000 ppm
	maxBurstMs        = 3_600_000 // 1 h
)

// config reads an impairment configuration: flags (bit 0: band limit),
// noise (int32, 1/100 dBFS, 0 for none), attenuation (uint32, 1/100 dB),
// drift (int32, 1/100 ppm), burst period and length (uint32 ms), burst
// level (int32, 1/100 dBFS), seed (uint64).
func (d *decoder) config() *impair.Config {
	flags := d.u8()
	noise := int32(d.u32())
	atten := d.u32()
	drift := int32(d.u32())
	every, length := d.u32(), d.u32()
	burst := int32(d.u32())
	seed := d.u64()
	if d.err != nil {
		return nil
	}
	switch {
	case flags&^1 != 0:
		d.fail("unknown line flags %#x", flags)
	case noise > 0 || noise < minLevelCdB:
		d.fail("noise level %d cdBFS", noise)
	case atten > maxAttenuationCdB:
		d.fail("attenuation %d cdB", atten)
	case drift > maxDriftCppm || drift < -maxDriftCppm:
		d.fail("drift %d cppm", drift)
	case every > maxBurstMs || length > maxBurstMs:
		d.fail("burst timing %d/%d ms", every, length)
	case burst > 0 || burst < minLevelCdB:
		d.fail("burst level %d cdBFS", burst)
	}
	if d.err != nil {
		return nil
	}
	return &impair.Config{
		BandLimit:     flags&1 != 0,
		NoiseDBFS:     float64(noise) / 100,
		AttenuationDB: float64(atten) / 100,
		DriftPPM:      float64(drift) / 100,
		BurstEvery:    time.Duration(every) * time.Millisecond,
		BurstLength:   time.Duration(length) * time.Millisecond,
		BurstDBFS:     float64(burst) / 100,
		Seed:          seed,
	}
}

// encode appends the message m to b.
func (m *message) encode(b []byte) []byte {
	start := len(b)
	b = append(b, m.typ, 0, 0)
	switch m.typ {
	case msgRegister:
		b = append(b, version)
		b = appendNumber(b, m.number)
		b = binary.LittleEndian.AppendUint32(b, m.window)
	case msgDial:
		b = append(b, version)
		b = appendNumber(b, m.number)
		b = appendNumber(b, m.from)
		b = binary.LittleEndian.AppendUint32(b, m.window)
		var has byte
		if m.fwd != nil {
			has |= 1
		}
		if m.back != nil {
			has |= 2
		}
		b = append(b, has)
		if m.fwd != nil {
			b = appendConfig(b, m.fwd)
		}
		if m.back != nil {
			b = appendConfig(b, m.back)
		}
	case msgAudio:
		b = appendSamples(b, m.samples)
	case msgRinging, msgAnswer, msgHangup:
		b = binary.LittleEndian.AppendUint64(b, m.callID)
	case msgRing:
		b = binary.LittleEndian.AppendUint64(b, m.callID)
		b = appendNumber(b, m.number)
	case msgConnected:
		b = binary.LittleEndian.AppendUint64(b, m.callID)
		b = binary.LittleEndian.AppendUint32(b, m.window)
		b = binary.LittleEndian.AppendUint16(b, m.frame)
	case msgRxAudio:
		b = binary.LittleEndian.AppendUint64(b, m.rxPos)
		b = binary.LittleEndian.AppendUint64(b, m.linePos)
		b = binary.LittleEndian.AppendUint64(b, m.txPos)
		b = appendSamples(b, m.samples)
	case msgEnd:
		t := m.text
		if len(t) > maxText {
			t = t[:maxText]
		}
		b = append(b, byte(m.cause), byte(len(t)))
		b = append(b, t...)
	}
	binary.LittleEndian.PutUint16(b[start+1:], uint16(len(b)-start-headerLen))
	return b
}

// toPCM and fromPCM convert samples for the wire: s travels as
// round(s·32768), clipped to int16, and arrives as v/32768, so that
// samples of that form (as audio.FromInt16 and audio.ReadWAV make them)
// cross a clean line bit-exactly.
func toPCM(s float64) int16 {
	if math.IsNaN(s) {
		return 0
	}
	return int16(max(-32768, min(32767, math.Round(s*32768))))
}

func fromPCM(v int16) float64 { return audio.FromInt16(v) }

func appendNumber(b []byte, s string) []byte {
	b = append(b, byte(len(s)))
	return append(b, s...)
}

func appendSamples(b []byte, s []int16) []byte {
	for _, v := range s {
		b = binary.LittleEndian.AppendUint16(b, uint16(v))
	}
	return b
}

// appendConfig appends c in the wire's fixed-point units (rounding to
// 1/100 dB and ppm, and to milliseconds).
func appendConfig(b []byte, c *impair.Config) []byte {
	var flags byte
	if c.BandLimit {
		flags |= 1
	}
	b = append(b, flags)
	b = binary.LittleEndian.AppendUint32(b, uint32(centi(c.NoiseDBFS)))
	b = binary.LittleEndian.AppendUint32(b, uint32(centi(c.AttenuationDB)))
	b = binary.LittleEndian.AppendUint32(b, uint32(centi(c.DriftPPM)))
	b = binary.LittleEndian.AppendUint32(b, uint32(c.BurstEvery.Milliseconds()))
	b = binary.LittleEndian.AppendUint32(b, uint32(c.BurstLength.Milliseconds()))
	b = binary.LittleEndian.AppendUint32(b, uint32(centi(c.BurstDBFS)))
	return binary.LittleEndian.AppendUint64(b, c.Seed)
}

func centi(v float64) int32 {
	return int32(math.Round(v * 100))
}

// checkConfig reports whether c can travel on the wire (and so be asked
// for when dialling): the wire's ranges, then impair's own checks.
func checkConfig(c *impair.Config) error {
	if c == nil {
		return nil
	}
	for _, v := range []float64{c.NoiseDBFS, c.AttenuationDB, c.DriftPPM, c.BurstDBFS} {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("impairment value %v", v)
		}
	}
	switch {
	case c.NoiseDBFS > 0 || c.NoiseDBFS < minLevelCdB/100:
		return fmt.Errorf("noise level %v dBFS: want -200 to 0", c.NoiseDBFS)
	case c.AttenuationDB < 0 || c.AttenuationDB > maxAttenuationCdB/100:
		return fmt.Errorf("attenuation %v dB: want 0 to 120", c.AttenuationDB)
	case math.Abs(c.DriftPPM) > maxDriftCppm/100:
		return fmt.Errorf("drift %v ppm: want -50000 to 50000", c.DriftPPM)
	case c.BurstEvery < 0 || c.BurstLength < 0 || c.BurstEvery.Milliseconds() > maxBurstMs || c.BurstLength.Milliseconds() > maxBurstMs:
		return fmt.Errorf("burst timing %v/%v: want 0 to 1h", c.BurstEvery, c.BurstLength)
	case c.BurstDBFS > 0 || c.BurstDBFS < minLevelCdB/100:
		return fmt.Errorf("burst level %v dBFS: want -200 to 0", c.BurstDBFS)
	}
	// Check what the switch will get: the values rounded for the wire.
	d := decoder{p: appendConfig(nil, c)}
	w := d.config()
	if d.err != nil {
		return d.err
	}
	if _, err := impair.New(*w); err != nil {
		return err
	}
	return nil
}
