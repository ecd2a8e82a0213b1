package reader

import (
	"context"
	"errors"
	"testing"

	"cardlink/internal/iso7816"
)

// fuzzConn answers with the responses it was given, in order, then with a
// transport error.
type fuzzConn struct {
	resps [][]byte
	sent  int
}

var errScriptEnd = errors.New("end of script")

func (c *fuzzConn) ATR() []byte { return nil }

func (c *fuzzConn) Transmit(ctx context.Context, apdu []byte) ([]byte, error) {
	c.sent++
	if len(c.resps) == 0 {
		return nil, errScriptEnd
	}
	r := c.resps[0]
	c.resps = c.resps[1:]
	return r, nil
}

func (c *fuzzConn) Reset(ctx context.Context) error { return nil }
func (c *fuzzConn) Close() error                    { return nil }

// FuzzExchange feeds Exchange card responses from the fuzzer (each prefixed
// by a length byte; the first input byte picks the command). Exchange must
// not panic, must stop, and must not return more data than the card sent.
func FuzzExchange(f *testing.F) {
	for _, s := range []string{
		"00 02 9000",
		"00 03 AA 6101 03 BB 9000",
		"01 02 9000 02 9000 04 CAFE 9000",
		"00 02 6C02 04 0102 9000",
		"00 03 AA 6110 02 6C01 03 BB 9000",
		"02 02 6A82",
		"00 01 90",
	} {
		f.Add(mustHex(s))
	}
	cmds := []iso7816.Command{
		{INS: 0xB0, Ne: 256},
		{CLA: 0x80, INS: 0x01, Data: make([]byte, 600), Ne: 256},
		{CLA: 0x01, INS: 0xA4, P1: 4, Data: make([]byte, 7)},
		{CLA: 0x80, INS: 0x01, Data: make([]byte, 300), Ne: 65536, Extended: true},
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		cmd := cmds[int(in[0])%len(cmds)]
		in = in[1:]
		c := &fuzzConn{}
		total := 0
		for len(in) > 0 {
			n := min(int(in[0]), len(in)-1)
			c.resps = append(c.resps, in[1:1+n])
			total += n
			in = in[1+n:]
		}
		got, err := Exchange(t.Context(), c, cmd)
		if len(got) > total {
			t.Errorf("Exchange() = %d bytes, %v; the card sent %d bytes in all", len(got), err, total)
		}
		if max := 3 + 2*(maxGetResponse+1); c.sent > max {
			t.Errorf("Exchange() sent %d commands, want at most %d", c.sent, max)
		}
	})
}
