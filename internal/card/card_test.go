package card

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"cardlink/internal/card/nvm"
	"cardlink/internal/card/nvm/nvmtest"
	"cardlink/internal/iso7816"
)

// Test applet AIDs. ambiguousA and ambiguousB share the 6-byte prefix
// A0 00 00 05 27 02.
var (
	echoAID    = mustHex("A0000005270101")
	ambiguousA = mustHex("A0000005270201")
	ambiguousB = mustHex("A0000005270202")
	refuseAID  = mustHex("F000000001")
	echoFCI    = "6F098407A0000005270101"
)

// Instructions of testApplet.
const (
	insEcho     = 0x01 // reply with the command data
	insLong     = 0x02 // reply with P1P2 bytes 00 01 02 ...
	insPanic    = 0x03 // put data under "k" in an NVM update, then panic
	insWrite    = 0x04 // put data under "k"
	insRead     = 0x05 // reply with the value under "k"
	insRAMSet   = 0x06 // RAM["k"] = data
	insRAMGet   = 0x07 // reply with RAM["k"]
	insWarning  = 0x08 // reply with the command data and 6283
	insWhoAmI   = 0x09 // reply with CLA and channel
	insSelected = 0x0A // reply with how many times Select was called
)

// testApplet is a small applet exercising every path of the card OS.
type testApplet struct {
	aid     []byte
	refuse  bool
	selects int
}

func (a *testApplet) AID() []byte { return a.aid }

func (a *testApplet) Select(ctx *Context) ([]byte, iso7816.SW) {
	if a.refuse {
		return nil, iso7816.SWConditionsNotSatisfied
	}
	a.selects++
	return iso7816.AppendTLV(nil, 0x6F, iso7816.AppendTLV(nil, 0x84, a.aid)), iso7816.SWOK
}

func (a *testApplet) Process(ctx *Context, cmd iso7816.Command) ([]byte, iso7816.SW) {
	switch cmd.INS {
	case insEcho:
		return cmd.Data, iso7816.SWOK
	case insLong:
		return longReply(int(cmd.P1)<<8 | int(cmd.P2)), iso7816.SWOK
	case insPanic:
		ctx.NVM.Update(func(tx *nvm.Tx) error {
			tx.Put("k", cmd.Data)
			panic("test applet panics")
		})
		return nil, iso7816.SWOK
	case insWrite:
		if err := ctx.NVM.Update(func(tx *nvm.Tx) error {
			tx.Put("k", cmd.Data)
			return nil
		}); err != nil {
			return nil, iso7816.SWMemoryFailure
		}
		return nil, iso7816.SWOK
	case insRead:
		return ctx.NVM.Get("k"), iso7816.SWOK
	case insRAMSet:
		ctx.RAM.Set("k", bytes.Clone(cmd.Data))
		return nil, iso7816.SWOK
	case insRAMGet:
		return ctx.RAM.Get("k"), iso7816.SWOK
	case insWarning:
		return cmd.Data, 0x6283
	case insWhoAmI:
		return []byte{cmd.CLA, byte(ctx.Channel)}, iso7816.SWOK
	case insSelected:
		return []byte{byte(a.selects)}, iso7816.SWOK
	}
	return nil, iso7816.SWINSNotSupported
}

func longReply(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

func newMemory(t testing.TB, m nvm.Medium) *nvm.Memory {
	t.Helper()
	if err := nvm.Format(m, testCapacity); err != nil {
		t.Fatalf("nvm.Format() = %v", err)
	}
	mem, err := nvm.Open(m)
	if err != nil {
		t.Fatalf("nvm.Open() = %v", err)
	}
	return mem
}

// testCapacity is the NVM capacity of test cards.
const testCapacity = 4096

// newTestCard returns a powered card holding the echo applet and three
// others (two with ambiguous AID prefixes, one refusing selection).
func newTestCard(t testing.TB) (*Card, *nvm.Memory) {
	t.Helper()
	mem := newMemory(t, nvm.NewMemMedium(nvm.MediumSize(testCapacity)))
	return newCardWith(t, mem), mem
}

func newCardWith(t testing.TB, mem *nvm.Memory) *Card {
	t.Helper()
	c, err := New(Config{NVM: mem, Applets: []Applet{
		&testApplet{aid: echoAID},
		&testApplet{aid: ambiguousA},
		&testApplet{aid: ambiguousB},
		&testApplet{aid: refuseAID, refuse: true},
	}})
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	if _, err := c.PowerOn(); err != nil {
		t.Fatalf("PowerOn() = %v", err)
	}
	return c
}

// step is one command and the response expected for it, all in hex.
type step struct {
	in, want string
}

// run sends each step and checks the full response APDU.
func run(t *testing.T, c *Card, steps []step) {
	t.Helper()
	for i, s := range steps {
		got, err := c.Transmit(mustHex(s.in))
		if err != nil {
			t.Fatalf("step %d: Transmit(%s) error = %v", i, s.in, err)
		}
		if want := mustHex(s.want); !bytes.Equal(got, want) {
			t.Fatalf("step %d: Transmit(%s) = %X, want %X", i, s.in, got, want)
		}
	}
}

// Frequently used commands.
const (
	selectEcho = "00A4040007A0000005270101 00"
	echoAABB   = "8001000002AABB 00"
)

func hexLong(from, n int) string {
	return fmt.Sprintf("%X", longReply(from + n)[from:])
}

func TestTransmit(t *testing.T) {
	tests := []struct {
		name  string
		steps []step
	}{
		{"select returns FCI", []step{{selectEcho, echoFCI + "9000"}}},
		{"select P2 0C returns no data", []step{{"00A4040C07A0000005270101", "9000"}}},
		{"select without Le returns FCI", []step{{"00A4040007A0000005270101", echoFCI + "9000"}}},
		{"select partial name", []step{{"00A4040006A00000052701 00", echoFCI + "9000"}}},
		{"select ambiguous partial name", []step{{"00A4040006A00000052702 00", "6A82"}}},
		{"select partial name too short", []step{{"00A4040004A0000005 00", "6A82"}}},
		{"select longer than AID", []step{{"00A4040008A000000527010100 00", "6A82"}}},
		{"select empty name", []step{{"00A40400 00", "6A82"}}},
		{"select unknown keeps selection", []step{
			{selectEcho, echoFCI + "9000"},
			{"00A4040005F0000000FF 00", "6A82"},
			{echoAABB, "AABB9000"},
		}},
		{"select refused keeps selection", []step{
			{selectEcho, echoFCI + "9000"},
			{"00A4040005F000000001 00", "6985"},
			{echoAABB, "AABB9000"},
		}},
		{"select by file ID", []step{{"00A40000023F00", "6A86"}}},
		{"select with FCP", []step{{"00A4040407A0000005270101 00", "6A86"}}},
		{"no applet selected", []step{{echoAABB, "6D00"}}},
		{"refused applet not selected", []step{
			{"00A4040005F000000001 00", "6985"},
			{echoAABB, "6D00"},
		}},
		{"unknown INS", []step{{selectEcho, echoFCI + "9000"}, {"8077000000", "6D00"}}},
		{"invalid INS 6x", []step{{selectEcho, echoFCI + "9000"}, {"8061000000", "6D00"}}},
		{"invalid INS 9x", []step{{selectEcho, echoFCI + "9000"}, {"8090000000", "6D00"}}},
		{"too short", []step{{"00A404", "6700"}}},
		{"Lc beyond data", []step{{"00A4040007A000", "6700"}}},
		{"CLA FF", []step{{"FFA4040007A0000005270101", "6E00"}}},
		{"CLA further interindustry", []step{{"40A4040007A0000005270101", "6E00"}}},
		{"CLA A0", []step{{"A0A4040007A0000005270101", "6E00"}}},
		{"secure messaging", []step{{"0CA4040007A0000005270101", "6882"}}},
		{"secure messaging proprietary", []step{{"84A4040007A0000005270101", "6882"}}},
		{"applet sees plain CLA", []step{
			{selectEcho, echoFCI + "9000"},
			{"8009000000", "80009000"},
			{"0009000000", "00009000"},
		}},
		{"warning with data", []step{
			{selectEcho, echoFCI + "9000"},
			{"8008000003010203 00", "0102036283"},
			{"8008000003010203 02", "01026283"},
			{"8008000003010203", "6283"},
			{"00C0000000", "6985"},
		}},
		{"GET RESPONSE with nothing pending", []step{{"00C0000000", "6985"}}},
		{"GET RESPONSE with P1P2", []step{
			{selectEcho, echoFCI + "9000"},
			{"80020010 00", hexLong(0, 16) + "9000"},
			{"80020110 00", hexLong(0, 256) + "6110"},
			{"00C0010000", "6A86"},
			{"00C0000000", "6985"},
		}},
		{"300 bytes", []step{
			{selectEcho, echoFCI + "9000"},
			{"8002012C 00", hexLong(0, 256) + "612C"},
			{"00C0000000", hexLong(256, 44) + "9000"},
			{"00C0000000", "6985"},
		}},
		{"1000 bytes", []step{
			{selectEcho, echoFCI + "9000"},
			{"800203E8 00", hexLong(0, 256) + "6100"},
			{"00C0000000", hexLong(256, 256) + "6100"},
			{"00C0000000", hexLong(512, 256) + "61E8"},
			{"00C0000000", hexLong(768, 232) + "9000"},
		}},
		{"Le shorter than data", []step{
			{selectEcho, echoFCI + "9000"},
			{"80020010 08", hexLong(0, 8) + "6108"},
			{"00C0000004", hexLong(8, 4) + "6104"},
			{"00C0000000", hexLong(12, 4) + "9000"},
		}},
		{"no Le", []step{
			{selectEcho, echoFCI + "9000"},
			{"80020010", "6110"},
			{"00C0000010", hexLong(0, 16) + "9000"},
		}},
		{"GET RESPONSE without Le", []step{
			{selectEcho, echoFCI + "9000"},
			{"80020010", "6110"},
			{"00C00000", hexLong(0, 16) + "9000"},
		}},
		{"extended Le 65536", []step{
			{selectEcho, echoFCI + "9000"},
			{"800203E8 000000", hexLong(0, 1000) + "9000"},
		}},
		{"extended Le 256", []step{
			{selectEcho, echoFCI + "9000"},
			{"800203E8 000100", hexLong(0, 256) + "6100"},
			{"00C0000000", hexLong(256, 256) + "6100"},
		}},
		{"other command drops pending", []step{
			{selectEcho, echoFCI + "9000"},
			{"8002012C 00", hexLong(0, 256) + "612C"},
			{echoAABB, "AABB9000"},
			{"00C0000000", "6985"},
		}},
		{"chain joins", []step{
			{selectEcho, echoFCI + "9000"},
			{"9001000002AABB", "9000"},
			{"9001000002CCDD", "9000"},
			{"8001000001EE 00", "AABBCCDDEE9000"},
		}},
		{"chain of OS command", []step{
			{"10A4040003A00000", "9000"},
			{"00A4040004 05270101 00", echoFCI + "9000"},
		}},
		{"chain applet sees plain CLA", []step{
			{selectEcho, echoFCI + "9000"},
			{"9009000000", "9000"},
			{"8009000000", "80009000"},
		}},
		{"chain mismatch at end", []step{
			{selectEcho, echoFCI + "9000"},
			{"9001000002AABB", "9000"},
			{"8001000101EE 00", "6883"},
			{"8001000001EE 00", "EE9000"},
		}},
		{"chain mismatch in middle", []step{
			{selectEcho, echoFCI + "9000"},
			{"9001000001AA", "9000"},
			{"9002000001BB", "6883"},
			{"8001000001EE 00", "EE9000"},
		}},
		{"chain interrupted by GET RESPONSE", []step{
			{selectEcho, echoFCI + "9000"},
			{"9001000001AA", "9000"},
			{"00C0000000", "6883"},
		}},
		{"chain CLA class must match", []step{
			{selectEcho, echoFCI + "9000"},
			{"9001000001AA", "9000"},
			{"0001000001BB 00", "6883"},
		}},
		{"manage channel", []step{
			{"0070000001", "019000"},
			{"01A4040007A0000005270101 00", echoFCI + "9000"},
			{"8009000000", "6D00"},
			{"8109000000", "80019000"},
			{"0070000001", "029000"},
			{"0070000001", "039000"},
			{"0070000001", "6A81"},
			{"0070800100", "9000"},
			{"8109000000", "6881"},
			{"0070800100", "6A86"},
			{"0070800000", "6A86"},
			{"0070800400", "6A86"},
			{"0070000100", "9000"},
			{"0070000100", "6A86"},
			{"0070000400", "6A86"},
			{"0070400000", "6A86"},
			{"007000000101", "6700"},
		}},
		{"manage channel without Le", []step{
			{"00700000", "6101"},
			{"00C0000001", "019000"},
		}},
		{"close channel named in CLA", []step{
			{"0070000001", "019000"},
			{"0170800000", "9000"},
			{"0170800000", "6881"},
		}},
		{"closed channel", []step{
			{"03A4040007A0000005270101 00", "6881"},
			{"0370000001", "6881"},
		}},
		{"channel opened from basic has no selection", []step{
			{selectEcho, echoFCI + "9000"},
			{"0070000001", "019000"},
			{"8109000000", "6D00"},
		}},
		{"channel opened from other channel inherits selection", []step{
			{"0070000001", "019000"},
			{"01A4040007A0000005270101 00", echoFCI + "9000"},
			{"0170000001", "029000"},
			{"8209000000", "80029000"},
			{"800A000000", "6D00"},
			{"820A000000", "029000"},
		}},
		{"channels keep own pending replies", []step{
			{selectEcho, echoFCI + "9000"},
			{"0070000001", "019000"},
			{"01A4040007A0000005270101 00", echoFCI + "9000"},
			{"8102012C 00", hexLong(0, 256) + "612C"},
			{echoAABB, "AABB9000"},
			{"01C0000000", hexLong(256, 44) + "9000"},
		}},
		{"channels keep own chains", []step{
			{selectEcho, echoFCI + "9000"},
			{"0070000001", "019000"},
			{"01A4040007A0000005270101 00", echoFCI + "9000"},
			{"9101000001AA", "9000"},
			{"9001000001BB", "9000"},
			{"8101000001CC 00", "AACC9000"},
			{"8001000001DD 00", "BBDD9000"},
		}},
		{"closing a channel drops its chain", []step{
			{"0070000001", "019000"},
			{"01A4040007A0000005270101 00", echoFCI + "9000"},
			{"9101000001AA", "9000"},
			{"0070800100", "9000"},
			{"0070000101", "9000"},
			{"01A4040007A0000005270101 00", echoFCI + "9000"},
			{"8101000001CC 00", "CC9000"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := newTestCard(t)
			run(t, c, tt.steps)
		})
	}
}

func TestChainLimit(t *testing.T) {
	part := "9001000000" + "1000" + strings.Repeat("AA", 0x1000) // 4096 bytes, extended
	last := func(n int) string {
		return fmt.Sprintf("80010000%02X%s00", n, strings.Repeat("BB", n))
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"exactly 8 KiB", []step{
			{selectEcho, echoFCI + "9000"},
			{part, "9000"},
			{"9001000000 0FFF" + strings.Repeat("AA", 0xFFF), "9000"},
			{"8001000001BB", "6100"}, // 8192 bytes, Le absent
		}},
		{"over 8 KiB at end", []step{
			{selectEcho, echoFCI + "9000"},
			{part, "9000"},
			{part, "9000"},
			{last(1), "6700"},
			{echoAABB, "AABB9000"},
		}},
		{"over 8 KiB in middle", []step{
			{selectEcho, echoFCI + "9000"},
			{part, "9000"},
			{part, "9000"},
			{"9001000001AA", "6700"},
			{last(1), "BB9000"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := newTestCard(t)
			run(t, c, tt.steps)
		})
	}
}

func TestRAM(t *testing.T) {
	tests := []struct {
		name  string
		clear func(t *testing.T, c *Card)
	}{
		{"Reset", func(t *testing.T, c *Card) {
			if _, err := c.Reset(); err != nil {
				t.Fatalf("Reset() = %v", err)
			}
		}},
		{"PowerOff and PowerOn", func(t *testing.T, c *Card) {
			c.PowerOff()
			if _, err := c.PowerOn(); err != nil {
				t.Fatalf("PowerOn() = %v", err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := newTestCard(t)
			run(t, c, []step{
				{selectEcho, echoFCI + "9000"},
				{"8006000002CAFE", "9000"},
				{"8007000000", "CAFE9000"},
				// RAM is per applet, not per channel.
				{"0070000001", "019000"},
				{"01A4040007A0000005270101 00", echoFCI + "9000"},
				{"8107000000", "CAFE9000"},
			})
			tt.clear(t, c)
			run(t, c, []step{
				{"8007000000", "6D00"}, // selection cleared
				{"8107000000", "6881"}, // channel 1 closed
				{selectEcho, echoFCI + "9000"},
				{"8007000000", "9000"}, // RAM cleared
			})
		})
	}
}

func TestRAMZeroValue(t *testing.T) {
	var r RAM
	if got := r.Get("a"); got != nil {
		t.Errorf("Get(a) on zero RAM = %X, want nil", got)
	}
	r.Delete("a")
	r.Clear()
	r.Set("a", []byte{1})
	if got := r.Get("a"); !bytes.Equal(got, []byte{1}) {
		t.Errorf("Get(a) = %X, want 01", got)
	}
	r.Delete("a")
	if got := r.Get("a"); got != nil {
		t.Errorf("Get(a) after Delete = %X, want nil", got)
	}
}

func TestNVMSurvivesReset(t *testing.T) {
	c, _ := newTestCard(t)
	run(t, c, []step{
		{selectEcho, echoFCI + "9000"},
		{"8004000002BEEF", "9000"},
	})
	c.PowerOff()
	if _, err := c.PowerOn(); err != nil {
		t.Fatalf("PowerOn() = %v", err)
	}
	run(t, c, []step{
		{selectEcho, echoFCI + "9000"},
		{"8005000000", "BEEF9000"},
	})
}

func TestPanic(t *testing.T) {
	c, _ := newTestCard(t)
	run(t, c, []step{
		{selectEcho, echoFCI + "9000"},
		{"8004000002BEEF", "9000"},
		{"8003000002DEAD", "6F00"},
		{"8005000000", "BEEF9000"}, // the panicking update wrote nothing
		{echoAABB, "AABB9000"},     // and the applet is still selected
		{"8004000002CAFE", "9000"}, // and NVM still takes updates
		{"8005000000", "CAFE9000"},
	})
}

func TestNotPowered(t *testing.T) {
	mem := newMemory(t, nvm.NewMemMedium(nvm.MediumSize(testCapacity)))
	c, err := New(Config{NVM: mem, Applets: []Applet{&testApplet{aid: echoAID}}})
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	if _, err := c.Transmit(mustHex(selectEcho)); !errors.Is(err, ErrNotPowered) {
		t.Errorf("Transmit() before PowerOn error = %v, want ErrNotPowered", err)
	}
	if _, err := c.Reset(); !errors.Is(err, ErrNotPowered) {
		t.Errorf("Reset() before PowerOn error = %v, want ErrNotPowered", err)
	}
	if _, err := c.PowerOn(); err != nil {
		t.Fatalf("PowerOn() = %v", err)
	}
	if _, err := c.Transmit(mustHex(selectEcho)); err != nil {
		t.Errorf("Transmit() after PowerOn error = %v, want nil", err)
	}
	c.PowerOff()
	if got, err := c.Transmit(mustHex(selectEcho)); !errors.Is(err, ErrNotPowered) || got != nil {
		t.Errorf("Transmit() after PowerOff = %X, %v, want nil, ErrNotPowered", got, err)
	}
}

func TestATR(t *testing.T) {
	tests := []struct {
		name       string
		historical []byte
		want       []byte
	}{
		{"default", nil, defaultHistorical},
		{"custom", []byte{0x80, 0x01}, []byte{0x80, 0x01}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mem := newMemory(t, nvm.NewMemMedium(nvm.MediumSize(testCapacity)))
			c, err := New(Config{NVM: mem, Historical: tt.historical})
			if err != nil {
				t.Fatalf("New() = %v", err)
			}
			atr, err := c.PowerOn()
			if err != nil {
				t.Fatalf("PowerOn() = %v", err)
			}
			if !bytes.Equal(atr, c.ATR()) {
				t.Errorf("PowerOn() = %X, ATR() = %X, want equal", atr, c.ATR())
			}
			if reset, err := c.Reset(); err != nil || !bytes.Equal(reset, atr) {
				t.Errorf("Reset() = %X, %v, want %X, nil", reset, err, atr)
			}
			a, err := iso7816.ParseATR(atr)
			if err != nil {
				t.Fatalf("ParseATR(%X) = %v", atr, err)
			}
			if !bytes.Equal(a.Historical, tt.want) {
				t.Errorf("ParseATR(%X).Historical = %X, want %X", atr, a.Historical, tt.want)
			}
			if len(a.Protocols) != 1 || a.Protocols[0] != 1 {
				t.Errorf("ParseATR(%X).Protocols = %v, want [1]", atr, a.Protocols)
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	mem := newMemory(t, nvm.NewMemMedium(nvm.MediumSize(testCapacity)))
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no NVM", Config{}},
		{"AID too short", Config{NVM: mem, Applets: []Applet{&testApplet{aid: []byte{1, 2, 3, 4}}}}},
		{"AID too long", Config{NVM: mem, Applets: []Applet{&testApplet{aid: make([]byte, 17)}}}},
		{"AID twice", Config{NVM: mem, Applets: []Applet{&testApplet{aid: echoAID}, &testApplet{aid: echoAID}}}},
		{"historical too long", Config{NVM: mem, Historical: make([]byte, 16)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if c, err := New(tt.cfg); err == nil {
				t.Errorf("New(%s) = %v, nil, want error", tt.name, c)
			}
		})
	}
}

func TestConcurrentTransmit(t *testing.T) {
	c, _ := newTestCard(t)
	run(t, c, []step{{selectEcho, echoFCI + "9000"}})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := range 4 {
		wg.Go(func() {
			for i := range 50 {
				in := []byte{0x80, insEcho, 0, 0, 2, byte(g), byte(i), 0}
				got, err := c.Transmit(in)
				if want := []byte{byte(g), byte(i), 0x90, 0x00}; err != nil || !bytes.Equal(got, want) {
					errs <- fmt.Errorf("Transmit(%X) = %X, %v, want %X, nil", in, got, err, want)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// FuzzTransmit sends a sequence of APDUs (each prefixed by a length byte) to
// a fresh card with the echo applet selected: Transmit must never fail or
// panic and must always answer at least a status word.
func FuzzTransmit(f *testing.F) {
	for _, s := range []string{
		"0C 8001000002AABB00",
		"05 800203E800 05 00C0000000",
		"07 9001000002AABB 08 8001000001EE00",
		"05 0070000001 0D 01A4040007A0000005270101",
		"08 800203E8000000",
		"06 8003000001AA",
		"03 00A404",
	} {
		f.Add(mustHex(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		c, _ := newTestCard(t)
		if _, err := c.Transmit(mustHex(selectEcho)); err != nil {
			t.Fatalf("Transmit(SELECT) = %v", err)
		}
		for len(in) > 0 {
			n := min(int(in[0]), len(in)-1)
			apdu := in[1 : 1+n]
			in = in[1+n:]
			got, err := c.Transmit(apdu)
			if err != nil || len(got) < 2 {
				t.Fatalf("Transmit(%X) = %X, %v, want at least SW1 SW2", apdu, got, err)
			}
			cmd, err := iso7816.ParseCommand(apdu)
			if err != nil {
				continue
			}
			limit := cmd.Ne
			if cmd.CLA&^0x13 == 0 && (cmd.INS == insGetResponse || cmd.INS == insSelect) && limit == 0 {
				limit = shortNe
			}
			if len(got)-2 > limit {
				t.Fatalf("Transmit(%X) = %d data bytes, want at most Ne = %d", apdu, len(got)-2, limit)
			}
		}
	})
}

func TestPowerLost(t *testing.T) {
	// Count the writes one update takes, then cut power at each of them.
	tear := nvmtest.NewTearing(nvm.NewMemMedium(nvm.MediumSize(testCapacity)))
	c := newCardWith(t, newMemory(t, tear))
	run(t, c, []step{{selectEcho, echoFCI + "9000"}})
	before := tear.Writes()
	run(t, c, []step{{"8004000002BEEF", "9000"}})
	writes := tear.Writes() - before
	if writes == 0 {
		t.Fatalf("an NVM update made no writes")
	}
	type cut struct {
		name  string
		first bool // the cut is before anything was written
		cut   func(*nvmtest.Tearing)
	}
	cuts := []cut{{name: "cut at sync", cut: (*nvmtest.Tearing).CutAtSync}}
	for n := range writes {
		for _, keep := range []int{0, 1, nvm.PageSize / 2} {
			cuts = append(cuts, cut{
				name:  fmt.Sprintf("cut at write %d keeping %d", n, keep),
				first: n == 0 && keep == 0,
				cut:   func(t *nvmtest.Tearing) { t.CutAt(n, keep) },
			})
		}
	}
	for _, tt := range cuts {
		t.Run(tt.name, func(t *testing.T) {
			tear := nvmtest.NewTearing(nvm.NewMemMedium(nvm.MediumSize(testCapacity)))
			c := newCardWith(t, newMemory(t, tear))
			run(t, c, []step{
				{selectEcho, echoFCI + "9000"},
				{"8004000002BEEF", "9000"},
				{"8006000002CAFE", "9000"}, // RAM
			})
			tt.cut(tear)
			in := mustHex("8004000002D00D")
			got, err := c.Transmit(in)
			if !errors.Is(err, nvm.ErrPowerLost) || got != nil {
				t.Fatalf("Transmit(%X) with power cut = %X, %v, want nil, ErrPowerLost", in, got, err)
			}
			if got, err := c.Transmit(mustHex(selectEcho)); !errors.Is(err, ErrNotPowered) {
				t.Fatalf("Transmit() after power lost = %X, %v, want ErrNotPowered", got, err)
			}
			tear.Restore()
			if _, err := c.PowerOn(); err != nil {
				t.Fatalf("PowerOn() after power lost = %v", err)
			}
			run(t, c, []step{
				{selectEcho, echoFCI + "9000"},
				{"8007000000", "9000"}, // RAM is gone
			})
			got, err = c.Transmit(mustHex("8005000000"))
			if err != nil {
				t.Fatalf("Transmit(read) = %v", err)
			}
			if old, updated := mustHex("BEEF9000"), mustHex("D00D9000"); !bytes.Equal(got, old) && !bytes.Equal(got, updated) {
				t.Errorf("Transmit(read) after recovery = %X, want %X or %X", got, old, updated)
			}
			if tt.first && !bytes.Equal(got, mustHex("BEEF9000")) {
				t.Errorf("Transmit(read) after cut at first write = %X, want BEEF9000", got)
			}
		})
	}
}
