package virtual

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"cardlink/internal/card"
	"cardlink/internal/card/nvm"
	"cardlink/internal/card/nvm/nvmtest"
	"cardlink/internal/iso7816"
	"cardlink/internal/reader"
	"cardlink/internal/reader/readertest"
)

var testAID = []byte{0xA0, 0x00, 0x00, 0x05, 0x27, 0x7E, 0x57}

// Instructions of testApplet.
const (
	insEcho  = 0x01 // reply with the command data
	insLong  = 0x02 // reply with P1P2 bytes 00 01 02 ...
	insWrite = 0x04 // store the data in NVM
	insRead  = 0x05 // reply with what insWrite stored
)

// testApplet echoes, sends long replies and writes NVM.
type testApplet struct{}

func (testApplet) AID() []byte { return testAID }

func (testApplet) Select(ctx *card.Context) ([]byte, iso7816.SW) {
	return iso7816.AppendTLV(nil, 0x6F, iso7816.AppendTLV(nil, 0x84, testAID)), iso7816.SWOK
}

func (testApplet) Process(ctx *card.Context, cmd iso7816.Command) ([]byte, iso7816.SW) {
	switch cmd.INS {
	case insEcho:
		return cmd.Data, iso7816.SWOK
	case insLong:
		b := make([]byte, int(cmd.P1)<<8|int(cmd.P2))
		for i := range b {
			b[i] = byte(i)
		}
		return b, iso7816.SWOK
	case insWrite:
		if err := ctx.NVM.Update(func(tx *nvm.Tx) error {
			tx.Put("v", cmd.Data)
			return nil
		}); err != nil {
			return nil, iso7816.SWMemoryFailure
		}
		return nil, iso7816.SWOK
	case insRead:
		return ctx.NVM.Get("v"), iso7816.SWOK
	}
	return nil, iso7816.SWINSNotSupported
}

const testCapacity = 4096

// newReader returns a reader over a fresh card with testApplet, and the
// medium under the card's NVM.
func newReader(t testing.TB) (*Reader, *card.Card, *nvmtest.Tearing) {
	t.Helper()
	tear := nvmtest.NewTearing(nvm.NewMemMedium(nvm.MediumSize(testCapacity)))
	if err := nvm.Format(tear, testCapacity); err != nil {
		t.Fatalf("nvm.Format() = %v", err)
	}
	mem, err := nvm.Open(tear)
	if err != nil {
		t.Fatalf("nvm.Open() = %v", err)
	}
	c, err := card.New(card.Config{NVM: mem, Applets: []card.Applet{testApplet{}}})
	if err != nil {
		t.Fatalf("card.New() = %v", err)
	}
	return New(c, "cardlink virtual 00"), c, tear
}

func connect(t testing.TB, r *Reader) reader.Conn {
	t.Helper()
	c, err := r.Connect(context.Background())
	if err != nil {
		t.Fatalf("Connect() = %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// exchange runs reader.Exchange and fails t on any error.
func exchange(t testing.TB, c reader.Conn, cmd iso7816.Command) []byte {
	t.Helper()
	got, err := reader.Exchange(context.Background(), c, cmd)
	if err != nil {
		t.Fatalf("Exchange(%02X %02X) = %v", cmd.CLA, cmd.INS, err)
	}
	return got
}

var selectTest = iso7816.Command{INS: 0xA4, P1: 0x04, Data: testAID, Ne: 256}

func TestConformance(t *testing.T) {
	readertest.RunOptions(t, func(t *testing.T) reader.Reader {
		r, _, _ := newReader(t)
		return r
	}, readertest.Options{
		AID:     testAID,
		Long:    iso7816.Command{CLA: 0x80, INS: insLong, P1: 0x03, P2: 0xE8, Ne: 256},
		LongLen: 1000,
	})
}

func TestExchangeCard(t *testing.T) {
	data := make([]byte, 1000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	tests := []struct {
		name string
		cmd  iso7816.Command
		want []byte
	}{
		{"short", iso7816.Command{CLA: 0x80, INS: insEcho, Data: data[:10], Ne: 256}, data[:10]},
		{"chained 1000 bytes", iso7816.Command{CLA: 0x80, INS: insEcho, Data: data, Ne: 256}, data},
		{"extended 1000 bytes", iso7816.Command{CLA: 0x80, INS: insEcho, Data: data, Ne: 65536, Extended: true}, data},
		{"no Le", iso7816.Command{CLA: 0x80, INS: insEcho, Data: data[:300]}, data[:300]},
		{"short Le", iso7816.Command{CLA: 0x80, INS: insEcho, Data: data[:300], Ne: 7}, data[:300]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _, _ := newReader(t)
			c := connect(t, r)
			exchange(t, c, selectTest)
			if got := exchange(t, c, tt.cmd); !bytes.Equal(got, tt.want) {
				t.Errorf("Exchange() = %d bytes %X, want %d bytes %X", len(got), got, len(tt.want), tt.want)
			}
		})
	}
}

func TestExchangeCardErrors(t *testing.T) {
	r, _, _ := newReader(t)
	c := connect(t, r)
	cmd := iso7816.Command{CLA: 0x80, INS: insEcho, Data: []byte{1}}
	if _, err := reader.Exchange(t.Context(), c, cmd); !errors.Is(err, iso7816.ErrUnsupported) {
		t.Errorf("Exchange() with no applet selected error = %v, want ErrUnsupported (6D00)", err)
	}
	cmd = iso7816.Command{CLA: 0x80, INS: insEcho, Data: make([]byte, 9000)}
	exchange(t, c, selectTest)
	if _, err := reader.Exchange(t.Context(), c, cmd); !errors.Is(err, iso7816.ErrWrongLength) {
		t.Errorf("Exchange() of a 9000-byte chain error = %v, want ErrWrongLength (6700)", err)
	}
}

func TestConnectNoCard(t *testing.T) {
	r, _, _ := newReader(t)
	r.Remove()
	if c, err := r.Connect(t.Context()); !errors.Is(err, reader.ErrNoCard) {
		t.Fatalf("Connect() with no card = %v, %v, want ErrNoCard", c, err)
	}
	r.Insert()
	connect(t, r)
}

func TestRemove(t *testing.T) {
	r, _, _ := newReader(t)
	old := connect(t, r)
	exchange(t, old, selectTest)
	r.Remove()
	apdu := []byte{0x80, insEcho, 0, 0, 1, 0xAA, 0}
	if b, err := old.Transmit(t.Context(), apdu); !errors.Is(err, reader.ErrCardRemoved) {
		t.Errorf("Transmit() after Remove = %X, %v, want ErrCardRemoved", b, err)
	}
	if err := old.Reset(t.Context()); !errors.Is(err, reader.ErrCardRemoved) {
		t.Errorf("Reset() after Remove = %v, want ErrCardRemoved", err)
	}
	r.Insert()
	if b, err := old.Transmit(t.Context(), apdu); !errors.Is(err, reader.ErrCardRemoved) {
		t.Errorf("Transmit() on the old Conn after Insert = %X, %v, want ErrCardRemoved", b, err)
	}
	c := connect(t, r)
	// The card was powered off: nothing is selected any more.
	if b, err := c.Transmit(t.Context(), apdu); err != nil || !bytes.Equal(b, []byte{0x6D, 0x00}) {
		t.Errorf("Transmit() on a new Conn = %X, %v, want 6D00", b, err)
	}
	if err := old.Close(); err != nil {
		t.Errorf("Close() of the old Conn = %v", err)
	}
	// Closing the old Conn must not power off the card under the new one.
	if b, err := c.Transmit(t.Context(), apdu); err != nil || !bytes.Equal(b, []byte{0x6D, 0x00}) {
		t.Errorf("Transmit() after closing the old Conn = %X, %v, want 6D00", b, err)
	}
}

func TestSharedConns(t *testing.T) {
	r, cd, _ := newReader(t)
	a := connect(t, r)
	b := connect(t, r)
	exchange(t, a, selectTest)
	if err := a.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if err := a.Close(); err != nil {
		t.Errorf("second Close() = %v, want nil", err)
	}
	// b keeps the card powered, and the selection made through a.
	echo := iso7816.Command{CLA: 0x80, INS: insEcho, Data: []byte{1, 2}, Ne: 256}
	if got := exchange(t, b, echo); !bytes.Equal(got, []byte{1, 2}) {
		t.Errorf("Exchange(echo) on the second Conn = %X, want 0102", got)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if _, err := cd.Transmit([]byte{0x00, 0xC0, 0, 0, 0}); !errors.Is(err, card.ErrNotPowered) {
		t.Errorf("card.Transmit() after the last Close = %v, want ErrNotPowered", err)
	}
	if _, err := b.Transmit(t.Context(), []byte{0x00, 0xC0, 0, 0, 0}); !errors.Is(err, ErrClosed) {
		t.Errorf("Transmit() after Close = %v, want ErrClosed", err)
	}
}

func TestResetClearsSelection(t *testing.T) {
	r, _, _ := newReader(t)
	c := connect(t, r)
	exchange(t, c, selectTest)
	if err := c.Reset(t.Context()); err != nil {
		t.Fatalf("Reset() = %v", err)
	}
	echo := iso7816.Command{CLA: 0x80, INS: insEcho, Data: []byte{1}}
	if _, err := reader.Exchange(t.Context(), c, echo); !errors.Is(err, iso7816.ErrUnsupported) {
		t.Errorf("Exchange(echo) after Reset error = %v, want ErrUnsupported (no applet selected)", err)
	}
}

func TestWait(t *testing.T) {
	r, _, _ := newReader(t)
	tests := []struct {
		name    string
		present bool // waited-for presence differs from this
		change  func()
	}{
		{"remove", true, r.Remove},
		{"insert", false, r.Insert},
		{"remove again", true, r.Remove},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() { done <- r.Wait(t.Context(), tt.present) }()
			tt.change()
			if err := <-done; err != nil {
				t.Errorf("Wait(%v) = %v, want nil", tt.present, err)
			}
			got, err := r.Present(t.Context())
			if err != nil || got == tt.present {
				t.Errorf("Present() = %v, %v, want %v, nil", got, err, !tt.present)
			}
		})
	}
}

func TestWaitCanceled(t *testing.T) {
	r, _, _ := newReader(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Wait(ctx, true) }()
	r.Insert() // no change: the card is present already
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Wait(true) with no change = %v, want context.Canceled", err)
	}
}

func TestPowerLost(t *testing.T) {
	r, _, tear := newReader(t)
	c := connect(t, r)
	exchange(t, c, selectTest)
	exchange(t, c, iso7816.Command{CLA: 0x80, INS: insWrite, Data: []byte{1}})
	tear.CutAt(0, 0)
	write := iso7816.Command{CLA: 0x80, INS: insWrite, Data: []byte{2}}
	_, err := reader.Exchange(t.Context(), c, write)
	if !errors.Is(err, reader.ErrCardRemoved) || !errors.Is(err, nvm.ErrPowerLost) {
		t.Fatalf("Exchange(write) with power cut error = %v, want ErrCardRemoved and ErrPowerLost", err)
	}
	if _, err := c.Transmit(t.Context(), []byte{0x00, 0xC0, 0, 0, 0}); !errors.Is(err, reader.ErrCardRemoved) {
		t.Errorf("Transmit() after power lost = %v, want ErrCardRemoved", err)
	}
	tear.Restore()
	c = connect(t, r)
	exchange(t, c, selectTest)
	got := exchange(t, c, iso7816.Command{CLA: 0x80, INS: insRead, Ne: 256})
	if !bytes.Equal(got, []byte{1}) {
		t.Errorf("Exchange(read) after power lost = %X, want 01", got)
	}
}

func TestName(t *testing.T) {
	r, _, _ := newReader(t)
	if got, want := r.Name(), "cardlink virtual 00"; got != want {
		t.Errorf("Name() = %q, want %q", got, want)
	}
}

func BenchmarkRoundTrip(b *testing.B) {
	r, _, _ := newReader(b)
	c := connect(b, r)
	exchange(b, c, selectTest)
	apdu := []byte{0x80, insEcho, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Transmit(ctx, apdu); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkExchangeLong(b *testing.B) {
	r, _, _ := newReader(b)
	c := connect(b, r)
	exchange(b, c, selectTest)
	cmd := iso7816.Command{CLA: 0x80, INS: insLong, P1: 0x03, P2: 0xE8, Ne: 256}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		got, err := reader.Exchange(ctx, c, cmd)
		if err != nil || len(got) != 1000 {
			b.Fatalf("Exchange() = %d bytes, %v", len(got), err)
		}
	}
}
