package wallet_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"testing"

	"cardlink/internal/applet/wallet/wallettest"
	"cardlink/internal/card/nvm"
	"cardlink/internal/iso7816"
	"cardlink/internal/money"
	"cardlink/internal/txn"
	"cardlink/internal/wallet"
)

// Purse commands (docs/wallet-applet.md, "Purse").
const (
	claProp       = 0x80
	insPurseLoad  = 0xA2
	insPurseDebit = 0xA6
)

// purseSnap is everything a purse command may change.
type purseSnap struct {
	Balance int64
	Seq     uint32
	Counter uint32
	Log     int // records used
	Last    lastRecord
}

// lastRecord is the most recent log record, comparable.
type lastRecord struct {
	Purpose txn.Purpose
	Counter uint32
	CVM     txn.CVM
	Payload string
}

// snapPurse reads the purse, counter and log through the host client.
func snapPurse(t testing.TB, env *wallettest.Env) purseSnap {
	t.Helper()
	ctx := context.Background()
	p, err := env.Client.Purse(ctx)
	if err != nil {
		t.Fatalf("Purse() = %v", err)
	}
	if p.Balance.Currency != env.Options.Currency {
		t.Fatalf("Purse().Balance.Currency = %q, want %q", p.Balance.Currency, env.Options.Currency)
	}
	c, err := env.Client.Counter(ctx)
	if err != nil {
		t.Fatalf("Counter() = %v", err)
	}
	log, err := env.Client.Log(ctx)
	if err != nil {
		t.Fatalf("Log() = %v", err)
	}
	s := purseSnap{Balance: p.Balance.Minor, Seq: p.Seq, Counter: c, Log: len(log)}
	if len(log) > 0 {
		r := log[0]
		s.Last = lastRecord{r.Purpose, r.Counter, r.CVM, string(r.Payload)}
	}
	return s
}

// load returns the signed PURSE LOAD data for env's card.
func load(env *wallettest.Env, seq uint32, minor int64) ([]byte, *txn.Load) {
	l := &txn.Load{CardNumber: env.CardNumber, Seq: seq, Amount: money.Amount{Minor: minor, Currency: env.Options.Currency}}
	return env.SignLoad(l), l
}

// mustLoad loads minor units with the purse's next sequence number.
func mustLoad(t testing.TB, env *wallettest.Env, minor int64) wallet.LoadReceipt {
	t.Helper()
	p, err := env.Client.Purse(context.Background())
	if err != nil {
		t.Fatalf("Purse() = %v", err)
	}
	data, _ := load(env, p.Seq+1, minor)
	r, err := env.Client.Load(context.Background(), data)
	if err != nil {
		t.Fatalf("Load(seq %d, %d) = %v", p.Seq+1, minor, err)
	}
	return r
}

func mustVerify(t testing.TB, env *wallettest.Env) {
	t.Helper()
	if err := env.Client.VerifyPIN(context.Background(), env.PIN); err != nil {
		t.Fatalf("VerifyPIN(%q) = %v", env.PIN, err)
	}
}

// swOf returns the status word of err (9000 for nil).
func swOf(err error) iso7816.SW {
	if err == nil {
		return iso7816.SWOK
	}
	if se, ok := errors.AsType[*iso7816.StatusError](err); ok {
		return se.SW
	}
	return 0
}

// otherSig signs like the issuer but with a key the card does not know.
func otherSig(t testing.TB, msg []byte) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(msg)
	sig, err := ecdsa.SignASN1(rand.Reader, k, h[:])
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

const otherCard = "4999000000000021" // Luhn-valid, not wallettest.CardNumber

func TestPurseLoad(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, env *wallettest.Env) // before the snapshot
		data  func(t *testing.T, env *wallettest.Env) []byte
		p1p2  uint16
		want  iso7816.SW
	}{
		{
			name: "first load",
			data: func(t *testing.T, env *wallettest.Env) []byte { d, _ := load(env, 1, 2500); return d },
			want: iso7816.SWOK,
		},
		{
			name:  "second load",
			setup: func(t *testing.T, env *wallettest.Env) { mustLoad(t, env, 100) },
			data:  func(t *testing.T, env *wallettest.Env) []byte { d, _ := load(env, 2, 2500); return d },
			want:  iso7816.SWOK,
		},
		{
			name: "up to the maximum",
			data: func(t *testing.T, env *wallettest.Env) []byte {
				d, _ := load(env, 1, env.Options.MaxBalance)
				return d
			},
			want: iso7816.SWOK,
		},
		{
			name:  "replayed load",
			setup: func(t *testing.T, env *wallettest.Env) { mustLoad(t, env, 100) },
			data:  func(t *testing.T, env *wallettest.Env) []byte { d, _ := load(env, 1, 100); return d },
			want:  iso7816.SWConditionsNotSatisfied,
		},
		{
			name: "reordered load (seq+2)",
			data: func(t *testing.T, env *wallettest.Env) []byte { d, _ := load(env, 2, 100); return d },
			want: iso7816.SWConditionsNotSatisfied,
		},
		{
			name: "bad signature",
			data: func(t *testing.T, env *wallettest.Env) []byte {
				_, l := load(env, 1, 100)
				return l.EncodeSigned(otherSig(t, l.Bytes()))
			},
			want: iso7816.SWSecurityStatus,
		},
		{
			name: "signature over another load",
			data: func(t *testing.T, env *wallettest.Env) []byte {
				d, _ := load(env, 1, 100)
				_, sig, err := txn.ParseSignedLoad(d)
				if err != nil {
					t.Fatal(err)
				}
				_, l2 := load(env, 1, 90000)
				return l2.EncodeSigned(sig)
			},
			want: iso7816.SWSecurityStatus,
		},
		{
			name: "signed for another card",
			data: func(t *testing.T, env *wallettest.Env) []byte {
				return env.SignLoad(&txn.Load{CardNumber: otherCard, Seq: 1, Amount: money.Amount{Minor: 100, Currency: env.Options.Currency}})
			},
			want: iso7816.SWWrongData,
		},
		{
			name: "foreign currency",
			data: func(t *testing.T, env *wallettest.Env) []byte {
				return env.SignLoad(&txn.Load{CardNumber: env.CardNumber, Seq: 1, Amount: money.Amount{Minor: 100, Currency: "USD"}})
			},
			want: iso7816.SWWrongData,
		},
		{
			name: "over the maximum balance",
			data: func(t *testing.T, env *wallettest.Env) []byte {
				d, _ := load(env, 1, env.Options.MaxBalance+1)
				return d
			},
			want: iso7816.SWNoSpace,
		},
		{
			name:  "over the maximum balance with money in the purse",
			setup: func(t *testing.T, env *wallettest.Env) { mustLoad(t, env, 1) },
			data: func(t *testing.T, env *wallettest.Env) []byte {
				d, _ := load(env, 2, env.Options.MaxBalance)
				return d
			},
			want: iso7816.SWNoSpace,
		},
		{
			name:  "would overflow int64",
			setup: func(t *testing.T, env *wallettest.Env) { mustLoad(t, env, 1) },
			data: func(t *testing.T, env *wallettest.Env) []byte {
				d, _ := load(env, 2, 1<<63-1)
				return d
			},
			want: iso7816.SWNoSpace,
		},
		{
			name: "malformed",
			data: func(t *testing.T, env *wallettest.Env) []byte { return []byte{0xE5, 0x01, 0x00} },
			want: iso7816.SWWrongData,
		},
		{
			name: "empty",
			data: func(t *testing.T, env *wallettest.Env) []byte { return nil },
			want: iso7816.SWWrongData,
		},
		{
			name: "trailing byte",
			data: func(t *testing.T, env *wallettest.Env) []byte { d, _ := load(env, 1, 100); return append(d, 0) },
			want: iso7816.SWWrongData,
		},
		{
			name: "P1-P2 not zero",
			data: func(t *testing.T, env *wallettest.Env) []byte { d, _ := load(env, 1, 100); return d },
			p1p2: 0x0100,
			want: iso7816.SWIncorrectP1P2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := wallettest.New(t, wallettest.Options{})
			if tt.setup != nil {
				tt.setup(t, env)
			}
			data := tt.data(t, env)
			before := snapPurse(t, env)
			resp, sw := env.Transmit(t, iso7816.Command{CLA: claProp, INS: insPurseLoad, P1: byte(tt.p1p2 >> 8), P2: byte(tt.p1p2), Data: data, Ne: 256})
			if sw != tt.want {
				t.Fatalf("PURSE LOAD = %v, want %v", sw, tt.want)
			}
			after := snapPurse(t, env)
			if sw != iso7816.SWOK {
				if after != before {
					t.Errorf("state after refused load = %+v, want unchanged %+v", after, before)
				}
				if len(resp) != 0 {
					t.Errorf("refused load answered % X, want no data", resp)
				}
				return
			}
			l, _, err := txn.ParseSignedLoad(data)
			if err != nil {
				t.Fatal(err)
			}
			want := purseSnap{Balance: before.Balance + l.Amount.Minor, Seq: l.Seq, Counter: before.Counter + 1, Log: before.Log + 1}
			if after.Balance != want.Balance || after.Seq != want.Seq || after.Counter != want.Counter || after.Log != want.Log {
				t.Errorf("state after load = %+v, want %+v", after, want)
			}
			if r := after.Last; r.Purpose != txn.PurposeLoadReceipt || r.Counter != want.Counter || r.CVM != txn.CVMNone || r.Payload != string(l.Bytes()) {
				t.Errorf("last log record = %+v, want load receipt, counter %d, payload %X", r, want.Counter, l.Bytes())
			}
			checkLoadResponse(t, env, resp, l, want)
		})
	}
}

// checkLoadResponse checks DF30 DF32 9F36 9F4B and the receipt signature.
func checkLoadResponse(t *testing.T, env *wallettest.Env, resp []byte, l txn.Load, want purseSnap) {
	t.Helper()
	list, err := iso7816.ParseTLV(resp)
	if err != nil || len(list) != 4 {
		t.Fatalf("PURSE LOAD response % X: %v, want 4 data objects", resp, err)
	}
	tags := []iso7816.Tag{0xDF30, 0xDF32, 0x9F36, 0x9F4B}
	for i, tag := range tags {
		if list[i].Tag != tag {
			t.Errorf("PURSE LOAD response object %d = tag %X, want %X", i, uint32(list[i].Tag), uint32(tag))
		}
	}
	r := wallet.LoadReceipt{Load: l, Counter: want.Counter, Sig: list[3].Value}
	if !txn.VerifyEnvelope(env.CardKey(), r.Envelope(), r.Sig) {
		t.Errorf("load receipt signature does not verify with the card key")
	}
	if got := be(list[0].Value); got != uint64(want.Balance) {
		t.Errorf("PURSE LOAD DF30 = %d, want %d", got, want.Balance)
	}
	if got := be(list[1].Value); got != uint64(want.Seq) {
		t.Errorf("PURSE LOAD DF32 = %d, want %d", got, want.Seq)
	}
	if got := be(list[2].Value); got != uint64(want.Counter) {
		t.Errorf("PURSE LOAD 9F36 = %d, want %d", got, want.Counter)
	}
}

func be(b []byte) uint64 {
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return v
}

func TestLoadClient(t *testing.T) {
	env := wallettest.New(t, wallettest.Options{})
	ctx := context.Background()
	p, err := env.Client.Purse(ctx)
	if err != nil {
		t.Fatalf("Purse() = %v", err)
	}
	want := wallet.PurseState{
		Balance: money.Amount{Currency: env.Options.Currency},
		Max:     money.Amount{Minor: env.Options.MaxBalance, Currency: env.Options.Currency},
	}
	if p != want {
		t.Fatalf("Purse() on a new card = %+v, want %+v", p, want)
	}
	for i, minor := range []int64{1000, 250, 1} {
		data, l := load(env, uint32(i+1), minor)
		r, err := env.Client.Load(ctx, data)
		if err != nil {
			t.Fatalf("Load(seq %d) = %v", i+1, err)
		}
		want.Balance.Minor += minor
		if r.Balance != want.Balance || r.Load != *l || r.Counter != uint32(i+1) {
			t.Errorf("Load(seq %d) = %+v, want balance %v, counter %d", i+1, r, want.Balance, i+1)
		}
		if !txn.VerifyEnvelope(env.CardKey(), r.Envelope(), r.Sig) {
			t.Errorf("Load(seq %d) receipt does not verify", i+1)
		}
	}
	data, _ := load(env, 3, 5)
	if _, err := env.Client.Load(ctx, data); !errors.Is(err, iso7816.ErrConditions) {
		t.Errorf("Load(replayed) = %v, want ErrConditions", err)
	}
	data, _ = load(env, 4, env.Options.MaxBalance)
	if _, err := env.Client.Load(ctx, data); !errors.Is(err, iso7816.ErrNoSpace) {
		t.Errorf("Load(over max) = %v, want ErrNoSpace", err)
	}
	if _, err := env.Client.Load(ctx, []byte{1, 2, 3}); err == nil {
		t.Errorf("Load(garbage) = nil, want an error")
	}
	p, err = env.Client.Purse(ctx)
	if err != nil {
		t.Fatalf("Purse() = %v", err)
	}
	want.Seq = 3
	if p != want {
		t.Errorf("Purse() = %+v, want %+v", p, want)
	}
}

func TestPurseDebit(t *testing.T) {
	const funds = 5000
	tests := []struct {
		name   string
		setup  func(t testing.TB, env *wallettest.Env) // after loading funds, before the snapshot
		minor  int64
		mutate func(tx *txn.Transaction)
		want   iso7816.SW
		cvm    txn.CVM
	}{
		{name: "after PIN", setup: mustVerify, minor: 1234, want: iso7816.SWOK, cvm: txn.CVMOfflinePIN},
		{name: "whole balance", setup: mustVerify, minor: funds, want: iso7816.SWOK, cvm: txn.CVMOfflinePIN},
		{
			name: "after biometric",
			setup: func(t testing.TB, env *wallettest.Env) {
				if err := env.Client.VerifyBiometric(context.Background(), env.BioTemplate); err != nil {
					t.Fatalf("VerifyBiometric() = %v", err)
				}
			},
			minor: 1, want: iso7816.SWOK, cvm: txn.CVMBiometric,
		},
		{name: "without verification", minor: 100, want: iso7816.SWSecurityStatus},
		{
			name: "verification consumed by a signature",
			setup: func(t testing.TB, env *wallettest.Env) {
				mustVerify(t, env)
				b, _ := env.Transaction(1, 9).Encode()
				if _, err := env.Client.SignTransaction(context.Background(), b, false); err != nil {
					t.Fatalf("SignTransaction() = %v", err)
				}
			},
			minor: 100, want: iso7816.SWSecurityStatus,
		},
		{name: "over the balance", setup: mustVerify, minor: funds + 1, want: iso7816.SWConditionsNotSatisfied},
		{
			name: "wrong currency", setup: mustVerify, minor: 100,
			mutate: func(tx *txn.Transaction) { tx.Amount.Currency = "USD" },
			want:   iso7816.SWWrongData,
		},
		{
			name: "wrong PIN", minor: 100,
			setup: func(t testing.TB, env *wallettest.Env) {
				if err := env.Client.VerifyPIN(context.Background(), "9999"); err == nil {
					t.Fatalf("VerifyPIN(wrong) = nil, want an error")
				}
			},
			want: iso7816.SWSecurityStatus,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := wallettest.New(t, wallettest.Options{})
			mustLoad(t, env, funds)
			if tt.setup != nil {
				tt.setup(t, env)
			}
			tx := env.Transaction(tt.minor, 1)
			if tt.mutate != nil {
				tt.mutate(tx)
			}
			data, err := tx.Encode()
			if err != nil {
				t.Fatal(err)
			}
			before := snapPurse(t, env)
			resp, sw := env.Transmit(t, iso7816.Command{CLA: claProp, INS: insPurseDebit, Data: data, Ne: 256})
			if sw != tt.want {
				t.Fatalf("PURSE DEBIT = %v, want %v", sw, tt.want)
			}
			after := snapPurse(t, env)
			if sw != iso7816.SWOK {
				if after != before {
					t.Errorf("state after refused debit = %+v, want unchanged %+v", after, before)
				}
				return
			}
			want := purseSnap{Balance: before.Balance - tt.minor, Seq: before.Seq, Counter: before.Counter + 1, Log: before.Log + 1}
			if after.Balance != want.Balance || after.Seq != want.Seq || after.Counter != want.Counter || after.Log != want.Log {
				t.Errorf("state after debit = %+v, want %+v", after, want)
			}
			if r := after.Last; r.Purpose != txn.PurposePurseDebit || r.Counter != want.Counter || r.CVM != tt.cvm || r.Payload != string(data) {
				t.Errorf("last log record = %+v, want purse debit, counter %d, CVM %v", r, want.Counter, tt.cvm)
			}
			list, err := iso7816.ParseTLV(resp)
			if err != nil || len(list) != 4 || list[0].Tag != 0xDF30 || list[1].Tag != 0x9F36 || list[2].Tag != 0x9F34 || list[3].Tag != 0x9F4B {
				t.Fatalf("PURSE DEBIT response % X, want DF30 9F36 9F34 9F4B", resp)
			}
			if be(list[0].Value) != uint64(want.Balance) || be(list[1].Value) != uint64(want.Counter) || be(list[2].Value) != uint64(tt.cvm) {
				t.Errorf("PURSE DEBIT response % X, want balance %d, counter %d, CVM %v", resp, want.Balance, want.Counter, tt.cvm)
			}
			r := wallet.DebitReceipt{Transaction: data, Counter: want.Counter, CVM: tt.cvm, Sig: list[3].Value}
			if !txn.VerifyEnvelope(env.CardKey(), r.Envelope(env.CardNumber), r.Sig) {
				t.Errorf("debit receipt does not verify with the card key")
			}
		})
	}
}

func TestDebitClient(t *testing.T) {
	env := wallettest.New(t, wallettest.Options{})
	ctx := context.Background()
	mustLoad(t, env, 1000)

	// Two debits need two verifications.
	mustVerify(t, env)
	r1, err := env.Client.Debit(ctx, env.Transaction(300, 1))
	if err != nil {
		t.Fatalf("Debit(300) = %v", err)
	}
	if r1.Balance.Minor != 700 || r1.CVM != txn.CVMOfflinePIN {
		t.Errorf("Debit(300) = balance %v CVM %v, want 7.00 EUR, offline PIN", r1.Balance, r1.CVM)
	}
	if _, err := env.Client.Debit(ctx, env.Transaction(300, 2)); !errors.Is(err, iso7816.ErrSecurityStatus) {
		t.Errorf("second Debit without verification = %v, want ErrSecurityStatus", err)
	}
	mustVerify(t, env)
	r2, err := env.Client.Debit(ctx, env.Transaction(300, 2))
	if err != nil {
		t.Fatalf("second Debit after verification = %v", err)
	}
	if r2.Balance.Minor != 400 || r2.Counter != r1.Counter+1 {
		t.Errorf("second Debit = balance %v counter %d, want 4.00 EUR, %d", r2.Balance, r2.Counter, r1.Counter+1)
	}
	for _, r := range []wallet.DebitReceipt{r1, r2} {
		if !txn.VerifyEnvelope(env.CardKey(), r.Envelope(env.CardNumber), r.Sig) {
			t.Errorf("receipt at counter %d does not verify", r.Counter)
		}
	}

	// A refused debit (over the balance) still consumes the verification.
	mustVerify(t, env)
	if _, err := env.Client.Debit(ctx, env.Transaction(401, 3)); !errors.Is(err, iso7816.ErrConditions) {
		t.Errorf("Debit(over balance) = %v, want ErrConditions", err)
	}
	if _, err := env.Client.Debit(ctx, env.Transaction(400, 3)); !errors.Is(err, iso7816.ErrSecurityStatus) {
		t.Errorf("Debit after a refused debit = %v, want ErrSecurityStatus", err)
	}
	// A wrong currency does not (the data is checked first).
	mustVerify(t, env)
	usd := env.Transaction(1, 4)
	usd.Amount.Currency = "USD"
	if _, err := env.Client.Debit(ctx, usd); !errors.Is(err, iso7816.ErrWrongData) {
		t.Errorf("Debit(USD) = %v, want ErrWrongData", err)
	}
	if r, err := env.Client.Debit(ctx, env.Transaction(400, 4)); err != nil || r.Balance.Minor != 0 {
		t.Errorf("Debit(whole balance) = %+v, %v, want balance 0", r, err)
	}
	p, err := env.Client.Purse(ctx)
	if err != nil || p.Balance.Minor != 0 {
		t.Errorf("Purse() = %+v, %v, want balance 0", p, err)
	}
	if _, err := env.Client.Debit(ctx, &txn.Transaction{}); err == nil {
		t.Errorf("Debit(invalid transaction) = nil, want an error")
	}
}

func TestPurseCommandsRefused(t *testing.T) {
	blank := wallettest.New(t, wallettest.Options{Blank: true})
	env := wallettest.New(t, wallettest.Options{})
	data, _ := load(env, 1, 100)
	tx, _ := env.Transaction(1, 1).Encode()
	tests := []struct {
		name string
		env  *wallettest.Env
		cmd  iso7816.Command
		want iso7816.SW
	}{
		{"load while personalizing", blank, iso7816.Command{CLA: claProp, INS: insPurseLoad, Data: data}, iso7816.SWConditionsNotSatisfied},
		{"debit while personalizing", blank, iso7816.Command{CLA: claProp, INS: insPurseDebit, Data: tx}, iso7816.SWConditionsNotSatisfied},
		{"load with CLA 00", env, iso7816.Command{CLA: 0x00, INS: insPurseLoad, Data: data}, iso7816.SWCLANotSupported},
		{"debit with P2", env, iso7816.Command{CLA: claProp, INS: insPurseDebit, P2: 1, Data: tx}, iso7816.SWIncorrectP1P2},
		{"debit malformed", env, iso7816.Command{CLA: claProp, INS: insPurseDebit, Data: tx[:len(tx)-1]}, iso7816.SWWrongData},
		{"debit empty", env, iso7816.Command{CLA: claProp, INS: insPurseDebit}, iso7816.SWWrongData},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, sw := tt.env.Transmit(t, tt.cmd); sw != tt.want {
				t.Errorf("%02X %02X %02X %02X = %v, want %v", tt.cmd.CLA, tt.cmd.INS, tt.cmd.P1, tt.cmd.P2, sw, tt.want)
			}
		})
	}
}

func TestPurseGetData(t *testing.T) {
	env := wallettest.New(t, wallettest.Options{})
	mustLoad(t, env, 4321)
	tests := []struct {
		tag  iso7816.Tag
		want []byte
	}{
		{0xDF30, []byte{0, 0, 0, 0, 0, 0, 0x10, 0xE1}},
		{0xDF31, []byte("EUR")},
		{0xDF32, []byte{0, 0, 0, 1}},
		{0xDF33, []byte{0, 0, 0, 0, 0, 1, 0x86, 0xA0}},
	}
	for _, tt := range tests {
		got, err := env.Client.GetData(context.Background(), tt.tag)
		if err != nil || !bytes.Equal(got, tt.want) {
			t.Errorf("GetData(%X) = % X, %v, want % X", uint32(tt.tag), got, err, tt.want)
		}
	}
}

// TestPurseLoadTearing cuts power at every NVM write of a PURSE LOAD.
func TestPurseLoadTearing(t *testing.T) {
	env := wallettest.New(t, wallettest.Options{})
	mustLoad(t, env, 700)
	before := snapPurse(t, env)
	data, l := load(env, before.Seq+1, 250)
	op := func(e *wallettest.Env) error {
		_, err := e.Client.Load(context.Background(), data)
		return err
	}
	wallettest.Tear(t, env, op, func(t *testing.T, e *wallettest.Env, _ error, cutAt int) {
		s := snapPurse(t, e)
		applied := checkValueMove(t, before, s, l.Amount.Minor, txn.PurposeLoadReceipt)
		if applied && s.Last.Payload != string(l.Bytes()) {
			t.Errorf("load applied but last log payload = %X, want %X", s.Last.Payload, l.Bytes())
		}
		// The issuer resends the same load: applied exactly once.
		_, err := e.Client.Load(context.Background(), data)
		switch {
		case applied && !errors.Is(err, iso7816.ErrConditions):
			t.Errorf("resending an applied load = %v, want ErrConditions", err)
		case !applied && err != nil:
			t.Errorf("resending a load lost to the cut = %v, want success", err)
		}
		if s := snapPurse(t, e); s.Balance != before.Balance+l.Amount.Minor || s.Seq != l.Seq {
			t.Errorf("after resending, purse = %+v, want balance %d seq %d", s, before.Balance+l.Amount.Minor, l.Seq)
		}
	})
}

// TestPurseDebitTearing cuts power at every NVM write of a PURSE DEBIT.
func TestPurseDebitTearing(t *testing.T) {
	env := wallettest.New(t, wallettest.Options{})
	mustLoad(t, env, 700)
	before := snapPurse(t, env)
	tx := env.Transaction(250, 1)
	data, _ := tx.Encode()
	op := func(e *wallettest.Env) error {
		if err := e.Client.VerifyPIN(context.Background(), e.PIN); err != nil {
			return err
		}
		_, err := e.Client.Debit(context.Background(), tx)
		return err
	}
	wallettest.Tear(t, env, op, func(t *testing.T, e *wallettest.Env, _ error, cutAt int) {
		s := snapPurse(t, e)
		applied := checkValueMove(t, before, s, -tx.Amount.Minor, txn.PurposePurseDebit)
		if applied && s.Last.Payload != string(data) {
			t.Errorf("debit applied but last log payload = %X, want %X", s.Last.Payload, data)
		}
		// The power cut ended the verification: a debit needs a new one.
		if _, err := e.Client.Debit(context.Background(), tx); !errors.Is(err, iso7816.ErrSecurityStatus) {
			t.Errorf("Debit after power cycle = %v, want ErrSecurityStatus", err)
		}
		if err := e.Client.VerifyPIN(context.Background(), e.PIN); err != nil {
			t.Errorf("VerifyPIN after cut = %v (a PIN try must never be lost for good)", err)
		}
	})
}

// checkValueMove checks the tearing invariants of a purse command that
// moves delta minor units and logs purpose: the balance is old or new, the
// sequence number moved iff a load moved the balance, the counter moved by
// one iff the balance moved, a log record exists iff the counter moved. It
// reports whether the command was applied.
func checkValueMove(t *testing.T, before, s purseSnap, delta int64, purpose txn.Purpose) bool {
	t.Helper()
	applied := s.Balance == before.Balance+delta
	if !applied && s.Balance != before.Balance {
		t.Fatalf("balance after cut = %d, want %d (old) or %d (new)", s.Balance, before.Balance, before.Balance+delta)
	}
	wantSeq := before.Seq
	if applied && purpose == txn.PurposeLoadReceipt {
		wantSeq++
	}
	if s.Seq != wantSeq {
		t.Errorf("seq after cut = %d, want %d (balance moved: %t)", s.Seq, wantSeq, applied)
	}
	switch {
	case s.Counter < before.Counter:
		t.Errorf("counter after cut = %d, went back from %d", s.Counter, before.Counter)
	case applied && s.Counter != before.Counter+1, !applied && s.Counter != before.Counter:
		t.Errorf("counter after cut = %d, want %d + (1 iff balance moved: %t)", s.Counter, before.Counter, applied)
	}
	moved := s.Counter != before.Counter
	if wantLog := before.Log + b2i(moved); s.Log != wantLog {
		t.Errorf("log records after cut = %d, want %d (counter moved: %t)", s.Log, wantLog, moved)
	}
	if moved && (s.Last.Counter != s.Counter || s.Last.Purpose != purpose) {
		t.Errorf("last log record = %+v, want purpose %v at counter %d", s.Last, purpose, s.Counter)
	}
	return applied
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// transmitNo6F00 sends cmd and fails the test on 6F00, the card OS's
// answer to an applet panic.
func transmitNo6F00(t *testing.T, env *wallettest.Env, cmd iso7816.Command) ([]byte, iso7816.SW) {
	t.Helper()
	cmd.Extended = len(cmd.Data) > 255
	resp, sw := env.Transmit(t, cmd)
	if sw == iso7816.SWUnknown {
		t.Fatalf("%02X %02X %02X %02X with %d bytes % X = 6F00 (applet panic)", cmd.CLA, cmd.INS, cmd.P1, cmd.P2, len(cmd.Data), cmd.Data)
	}
	return resp, sw
}

func FuzzPurseLoad(f *testing.F) {
	env := wallettest.New(f, wallettest.Options{})
	for seq := range uint32(3) {
		d, _ := load(env, seq+1, 100)
		f.Add(d)
	}
	d, _ := load(env, 1, 1<<62)
	f.Add(d)
	f.Add([]byte{})
	f.Add([]byte{0xE5, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		before := snapPurse(t, env)
		_, sw := transmitNo6F00(t, env, iso7816.Command{CLA: claProp, INS: insPurseLoad, Data: data, Ne: 256})
		after := snapPurse(t, env)
		if sw != iso7816.SWOK {
			if after != before {
				t.Fatalf("refused load (%v) changed the purse: %+v, was %+v", sw, after, before)
			}
			return
		}
		l, sig, err := txn.ParseSignedLoad(data)
		if err != nil || !txn.VerifyLoad(&env.OpsKey.PublicKey, &l, sig) || l.Seq != before.Seq+1 {
			t.Fatalf("card accepted load % X (%v)", data, err)
		}
		if after.Balance != before.Balance+l.Amount.Minor || after.Counter != before.Counter+1 {
			t.Fatalf("load of %d: purse %+v, was %+v", l.Amount.Minor, after, before)
		}
	})
}

func FuzzPurseDebit(f *testing.F) {
	env := wallettest.New(f, wallettest.Options{})
	mustLoad(f, env, env.Options.MaxBalance)
	for i, minor := range []int64{1, 250, env.Options.MaxBalance + 1} {
		d, _ := env.Transaction(minor, byte(i)).Encode()
		f.Add(true, d)
	}
	usd := env.Transaction(5, 9)
	usd.Amount.Currency = "USD"
	d, _ := usd.Encode()
	f.Add(true, d)
	f.Add(false, []byte{0xE1, 0x00})
	f.Fuzz(func(t *testing.T, verify bool, data []byte) {
		// A debit refused on its data leaves the verification pending:
		// start every run from a known state.
		if err := env.Client.ResetVerification(context.Background()); err != nil {
			t.Fatalf("ResetVerification() = %v", err)
		}
		if verify {
			mustVerify(t, env)
		}
		before := snapPurse(t, env)
		_, sw := transmitNo6F00(t, env, iso7816.Command{CLA: claProp, INS: insPurseDebit, Data: data, Ne: 256})
		after := snapPurse(t, env)
		if sw != iso7816.SWOK {
			if after != before {
				t.Fatalf("refused debit (%v) changed the purse: %+v, was %+v", sw, after, before)
			}
			return
		}
		tx, err := txn.Parse(data)
		if err != nil || !verify {
			t.Fatalf("card accepted debit % X (verified %t, %v)", data, verify, err)
		}
		if after.Balance != before.Balance-tx.Amount.Minor || after.Balance < 0 || after.Counter != before.Counter+1 {
			t.Fatalf("debit of %d: purse %+v, was %+v", tx.Amount.Minor, after, before)
		}
	})
}

func BenchmarkPurseLoad(b *testing.B) {
	env := wallettest.New(b, wallettest.Options{MaxBalance: 1 << 62})
	ctx := context.Background()
	b.ReportAllocs()
	for i := range b.N {
		b.StopTimer()
		data, _ := load(env, uint32(i+1), 1)
		b.StartTimer()
		if _, err := env.Client.Load(ctx, data); err != nil {
			b.Fatalf("Load(seq %d) = %v", i+1, err)
		}
	}
}

func BenchmarkPurseDebit(b *testing.B) {
	env := wallettest.New(b, wallettest.Options{MaxBalance: 1 << 62})
	ctx := context.Background()
	mustLoad(b, env, 1<<62)
	tx := env.Transaction(1, 1)
	b.ReportAllocs()
	for range b.N {
		b.StopTimer()
		mustVerify(b, env)
		b.StartTimer()
		if _, err := env.Client.Debit(ctx, tx); err != nil {
			b.Fatalf("Debit() = %v", err)
		}
	}
}

// TestPurseCounterExhausted checks that a load or debit at the counter's
// maximum is refused with 6985 and changes nothing. It writes the
// counter's NVM record ("wallet/atc", wallet.go) directly.
func TestPurseCounterExhausted(t *testing.T) {
	env := wallettest.New(t, wallettest.Options{})
	mustLoad(t, env, 1000)
	err := env.NVM.Update(func(tx *nvm.Tx) error {
		tx.Put("wallet/atc", []byte{0xFF, 0xFF, 0xFF, 0xFF})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	before := snapPurse(t, env)
	if before.Counter != 1<<32-1 {
		t.Fatalf("counter = %d, want 2^32-1", before.Counter)
	}
	data, _ := load(env, 2, 100)
	if _, sw := env.Transmit(t, iso7816.Command{CLA: claProp, INS: insPurseLoad, Data: data}); sw != iso7816.SWConditionsNotSatisfied {
		t.Errorf("PURSE LOAD at counter 2^32-1 = %v, want 6985", sw)
	}
	mustVerify(t, env)
	tx, _ := env.Transaction(100, 1).Encode()
	if _, sw := env.Transmit(t, iso7816.Command{CLA: claProp, INS: insPurseDebit, Data: tx}); sw != iso7816.SWConditionsNotSatisfied {
		t.Errorf("PURSE DEBIT at counter 2^32-1 = %v, want 6985", sw)
	}
	if after := snapPurse(t, env); after != before {
		t.Errorf("state after refusals = %+v, want unchanged %+v", after, before)
	}
}
