package device

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"cardlink/internal/hal"
	"cardlink/internal/iso7816"
	"cardlink/internal/link"
	"cardlink/internal/money"
	"cardlink/internal/protocol"
	"cardlink/internal/reader"
	"cardlink/internal/txn"
	"cardlink/internal/wallet"
)

// PayReceipt is a receipt of an offline payment from the purse (service
// "Pay"): the merchant redeems it at the server, once (POST
// /v1/purse-redemptions; see cardlink card pay).
type PayReceipt struct {
	CardNumber  string
	Transaction txn.Transaction // as shown and signed
	wallet.DebitReceipt
}

// cardSession is one card in the reader.
type cardSession struct {
	c    *Controller
	ctx  context.Context // Run's: bounds the server exchanges
	hctx context.Context // the holder's steps: ends when the card goes or power fails
	card *wallet.Client
	info wallet.Info
	link *watchLink // the link dialled last; nil before the first
	set  Settings   // in force for this card (Controller.settings)
}

// key waits for a key, within ctx (which may be narrower than the
// holder's context).
func (s *cardSession) key(ctx context.Context) (hal.Key, error) {
	kctx, cancel := context.WithTimeout(ctx, s.set.HolderTimeout)
	defer cancel()
	stop := context.AfterFunc(s.hctx, cancel)
	defer stop()
	k, err := s.c.Keypad.Key(kctx)
	if err == nil {
		return k, nil
	}
	if cause := context.Cause(s.hctx); cause != nil {
		return hal.KeyNone, cause
	}
	if ctx.Err() != nil {
		return hal.KeyNone, context.Cause(ctx)
	}
	return hal.KeyNone, errTimeout
}

// ack waits for OK or CANCEL.
func (s *cardSession) ack() error {
	for {
		k, err := s.key(s.hctx)
		if err != nil {
			return s.end(err)
		}
		if k == hal.KeyOK || k == hal.KeyCancel {
			return nil
		}
	}
}

// end tells whether err ends the session: it returns ErrShutdown for
// critical power, a non-nil error for a card gone or ctx ended, and nil
// when the holder may go on.
func (s *cardSession) end(err error) error {
	cause := context.Cause(s.hctx)
	switch {
	case errors.Is(err, errCritical), errors.Is(cause, errCritical):
		return ErrShutdown
	case errors.Is(err, errCardRemoved), errors.Is(err, reader.ErrCardRemoved), errors.Is(cause, errCardRemoved):
		s.c.show("Card removed")
		return errCardRemoved
	case s.ctx.Err() != nil:
		return s.ctx.Err()
	case errors.Is(err, errTimeout):
		return err
	}
	return nil
}

// fail shows err (unless it ends the session) and waits for OK; it
// returns what end returns.
func (s *cardSession) fail(err error) error {
	if e := s.end(err); e != nil {
		return e
	}
	if errors.Is(err, errShown) {
		return nil
	}
	s.c.enter(StateError)
	s.c.Log.Info("error", "err", err)
	rows := append([]string{"Error"}, wrap(message(err))...)
	if len(rows) > hal.Rows-1 {
		rows = rows[:hal.Rows-1]
	}
	for len(rows) < hal.Rows-1 {
		rows = append(rows, "")
	}
	s.c.show(append(rows, "OK")...)
	return s.ack()
}

// message says err in the holder's words.
func message(err error) string {
	var pe *iso7816.PINError
	var perr *protocol.Error
	switch {
	case errors.As(err, &pe):
		return pe.Error()
	case errors.Is(err, iso7816.ErrBlocked):
		return "PIN blocked: unblock it with the PUK"
	case errors.Is(err, errCancelled):
		return "Cancelled"
	case errors.As(err, &perr):
		return "Server: " + perr.Code.String()
	case errors.Is(err, ErrServerRefused):
		return "Server refused the device"
	case errors.Is(err, hal.ErrLowPower):
		return "Power too low"
	case errors.Is(err, errUnreachable):
		return "Server unreachable"
	case errors.Is(err, errLinkLost):
		return "Link lost"
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF), errors.Is(err, context.DeadlineExceeded):
		return "Link lost"
	}
	return err.Error()
}

// unusable shows a card the device cannot use (not a wallet card, not
// personalized) and waits until it is taken out.
func (s *cardSession) unusable(err error) error {
	if e := s.end(err); e != nil {
		return e
	}
	s.c.enter(StateError)
	s.c.Log.Info("card not usable", "err", err)
	s.c.show("Card not usable", clip(message(err)), "", "Remove card")
	<-s.hctx.Done()
	return s.end(context.Cause(s.hctx))
}

// errShown ends a service whose refusal the holder has seen already.
var errShown = errors.New("refused; shown")

// errUnreachable wraps a failed Dial.
var errUnreachable = errors.New("connecting to the server")

// menu offers the services until the card goes away or the holder is
// done.
func (s *cardSession) menu() error {
	page := 0
	for {
		s.c.enter(StateMenu)
		pay := "5 Pay"
		if s.set.Payee == "" {
			pay = ""
		}
		if page == 0 {
			s.c.show(fit2("1 Sign in", "2 Buy ref"), fit2("3 Pending", "4 Load"), fit2(pay, "6 Balance"), "F1 more   CANCEL end")
		} else {
			s.c.show(fit2("7 Log", "8 Goods"), "9 Change PIN", "0 Unblock PIN", "F1 back  F2 Unload")
		}
		k, err := s.key(s.hctx)
		if err != nil {
			if e := s.end(err); e != nil {
				return e
			}
			continue
		}
		var run func() error
		switch k {
		case hal.KeyF1:
			page = 1 - page
		case hal.KeyF2:
			if page == 1 {
				run = s.unload
			}
		case hal.KeyCancel:
			return s.eject()
		case hal.Key1:
			run = s.signIn
		case hal.Key2:
			run = s.buyReference
		case hal.Key3:
			run = s.buyPushed
		case hal.Key4:
			run = s.load
		case hal.Key5:
			if s.set.Payee != "" {
				run = s.pay
			}
		case hal.Key6:
			run = s.balance
		case hal.Key7:
			run = s.log
		case hal.Key8:
			run = s.goods
		case hal.Key9:
			run = s.changePIN
		case hal.Key0:
			run = s.unblockPIN
		}
		if run == nil {
			continue
		}
		if err := run(); err != nil {
			if e := s.fail(err); e != nil {
				return e
			}
		}
	}
}

// fit2 puts two menu entries on one row.
func fit2(a, b string) string {
	return a + strings.Repeat(" ", max(1, 11-len([]rune(a)))) + b
}

// eject asks the holder to take the card and waits until they do.
func (s *cardSession) eject() error {
	s.c.show("Thank you", "", "Remove card")
	<-s.hctx.Done()
	return s.end(context.Cause(s.hctx))
}

// readDigits reads up to max digits; show draws the entry. mask shows
// stars. It returns errCancelled on CANCEL.
func (s *cardSession) readDigits(ctx context.Context, max int, show func(entry string)) (string, error) {
	var d []byte
	for {
		show(string(d))
		k, err := s.key(ctx)
		if err != nil {
			return "", err
		}
		switch {
		case k == hal.KeyCancel:
			return "", errCancelled
		case k == hal.KeyClear:
			if len(d) > 0 {
				d = d[:len(d)-1]
			}
		case k == hal.KeyOK:
			return string(d), nil
		default:
			if c, ok := k.Digit(); ok && len(d) < max {
				d = append(d, c)
			}
		}
	}
}

// readPIN reads a PIN, masked; with finger, F2 chooses a fingerprint
// instead (it returns "", true).
func (s *cardSession) readPIN(ctx context.Context, title string, finger bool) (string, bool, error) {
	for {
		s.c.enter(StateVerify)
		var d []byte
		hint := "OK enter CLEAR fix"
		if finger {
			hint = "OK enter  F2 finger"
		}
		for {
			s.c.show(title, "PIN: "+strings.Repeat("*", len(d)), "", hint)
			k, err := s.key(ctx)
			if err != nil {
				return "", false, err
			}
			if k == hal.KeyF2 && finger {
				return "", true, nil
			}
			switch {
			case k == hal.KeyCancel:
				return "", false, errCancelled
			case k == hal.KeyClear:
				d = d[:0]
				continue
			case k == hal.KeyOK:
			default:
				if c, ok := k.Digit(); ok && len(d) < rom.MaxPIN {
					d = append(d, c)
				}
				continue
			}
			break
		}
		if len(d) >= rom.MinPIN {
			return string(d), false, nil
		}
		// Too short: say so and ask again.
		s.c.show(title, fmt.Sprintf("A PIN has %d to %d", rom.MinPIN, rom.MaxPIN), "digits", "OK")
		if _, err := s.key(ctx); err != nil {
			return "", false, err
		}
	}
}

// verifyHolder asks for the holder's PIN or finger and, for an offline
// PIN or a finger, has the card check it, again after a wrong PIN. It
// returns the verification for the card to sign with. accepted are the
// methods the server accepts; online allows an online PIN when it accepts
// no offline one.
func (s *cardSession) verifyHolder(ctx context.Context, title string, accepted protocol.CVMSet, online bool) (AuthOptions, error) {
	finger := s.c.Sensor != nil && accepted.Has(txn.CVMBiometric)
	offline := accepted.Has(txn.CVMOfflinePIN)
	onlineOK := online && accepted.Has(txn.CVMOnlinePIN)
	if !offline && !onlineOK && !finger {
		return AuthOptions{}, errors.New("the server accepts no verification this device has")
	}
	for {
		pin, useFinger, err := s.readPIN(ctx, title, finger)
		if err != nil {
			return AuthOptions{}, err
		}
		if useFinger {
			s.c.show(title, "Place finger", "on the sensor")
			if err := s.c.use(hal.OpSensor, 1); err != nil {
				return AuthOptions{}, err
			}
			tmpl, err := s.c.Sensor.Capture(ctx)
			if err != nil {
				// A sensor that says what to do (a poor capture) is
				// tried again; one that fails is an error.
				var d interface{ Display() string }
				if !errors.As(err, &d) || ctx.Err() != nil {
					return AuthOptions{}, fmt.Errorf("reading the finger: %w", err)
				}
				s.c.show(title, clip(d.Display()), "", "OK try again")
				if _, err := s.key(ctx); err != nil {
					return AuthOptions{}, err
				}
				continue
			}
			if err := s.card.VerifyBiometric(ctx, tmpl); err != nil {
				if s.end(err) != nil || errors.Is(err, iso7816.ErrBlocked) {
					return AuthOptions{}, err
				}
				s.c.show(title, "Finger not", "recognised", "OK try again")
				if _, err := s.key(ctx); err != nil {
					return AuthOptions{}, err
				}
				continue
			}
			return AuthOptions{Biometric: tmpl, Checked: true}, nil
		}
		if !offline {
			return AuthOptions{OnlinePIN: pin}, nil
		}
		err = s.card.VerifyPIN(ctx, pin)
		var pe *iso7816.PINError
		if errors.As(err, &pe) && pe.Retries > 0 {
			s.c.show(title, "Wrong PIN", tries(pe.Retries), "OK try again")
			if _, err := s.key(ctx); err != nil {
				return AuthOptions{}, err
			}
			continue
		}
		if err != nil {
			return AuthOptions{}, err
		}
		return AuthOptions{PIN: pin, Checked: true}, nil
	}
}

// offline are the methods the card checks itself.
var offline = protocol.CVMs(txn.CVMOfflinePIN, txn.CVMBiometric)

// forget has the card forget a holder verification no signature used
// (best effort: a card taken out forgets it anyway).
func (s *cardSession) forget() {
	s.card.ResetVerification(context.WithoutCancel(s.hctx))
}

// dial opens a link to the server and shows the link state.
func (s *cardSession) dial(ctx context.Context) (link.Link, error) {
	s.c.indicate(func(i *hal.Indicators) { i.Link = hal.LinkConnecting })
	l, err := s.c.Dial(ctx)
	if err != nil {
		s.c.indicate(func(i *hal.Indicators) { i.Link = hal.LinkDown })
		return nil, fmt.Errorf("%w: %w", errUnreachable, err)
	}
	s.c.indicate(func(i *hal.Indicators) { i.Link = hal.LinkUp })
	w := &watchLink{}
	w.closeLink = &closeLink{Link: s.c.metered(l), done: func() {
		s.c.indicate(func(i *hal.Indicators) { i.Link = hal.LinkDown })
		if s.link == w {
			s.link = nil
		}
	}}
	s.link = w
	return w, nil
}

// watchLink watches the link dialled last while the holder decides (see
// watchLink.watch): the context it returns ends with a cause wrapping
// errLinkLost when the link drops meanwhile.
func (s *cardSession) watchLink(ctx context.Context) (context.Context, func()) {
	if s.link == nil {
		return ctx, func() {}
	}
	return s.link.watch(ctx)
}

// closeLink calls done when closed.
type closeLink struct {
	link.Link
	done func()
}

func (l *closeLink) Close() error {
	err := l.Link.Close()
	l.done()
	return err
}

// SetDeadline passes deadlines through when the link has them.
func (l *closeLink) SetDeadline(t time.Time) error {
	if d, ok := l.Link.(interface{ SetDeadline(time.Time) error }); ok {
		return d.SetDeadline(t)
	}
	return errors.ErrUnsupported
}

// authOptions are the options every exchange shares.
func (s *cardSession) authOptions() AuthOptions {
	return AuthOptions{Rand: s.c.Rand, Memory: s.c.Memory, Redial: func(ctx context.Context) (link.Link, error) {
		return s.dial(ctx)
	}}
}

// needs checks that power allows n units of op before a service asks
// the holder anything; when it does not, it shows why (what is the
// service) and reports false.
func (s *cardSession) needs(what string, op hal.Operation, n int) (bool, error) {
	if err := s.c.check(op, n); err != nil {
		return false, s.lowPower(what, err)
	}
	return true, nil
}

// lowPower shows why the service what was refused for low power and
// waits for OK.
func (s *cardSession) lowPower(what string, err error) error {
	s.c.enter(StateLowPower)
	st := s.c.power()
	s.c.Log.Info("refused for low power", "what", what, "err", err)
	s.c.show(clip(powerLine(st)), "Too low to start", clip(what), "OK back")
	return s.ack()
}

// online runs f over a new link with the device's identity, bounded by
// Timeout, after checking that power allows a transaction.
func (s *cardSession) online(what string, f func(ctx context.Context, l link.Link, id Identity) error) error {
	if ok, err := s.needs(what, hal.OpTransaction, 1); !ok {
		if err != nil {
			return err
		}
		return errShown
	}
	s.c.enter(StateCommunicating)
	s.c.show(clip(what), "", "Connecting...")
	id, err := s.c.identity()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.c.Timeout)
	defer cancel()
	l, err := s.dial(ctx)
	if err != nil {
		return err
	}
	defer l.Close()
	s.c.show(clip(what), "", "Waiting for server")
	return f(ctx, l, id)
}

// signIn authenticates the holder to the server.
func (s *cardSession) signIn() error {
	if ok, err := s.needs("a sign-in", hal.OpTransaction, 1); !ok {
		return err
	}
	v, err := s.verifyHolder(s.hctx, "Sign in", offline, false)
	if err != nil {
		return err
	}
	// A verification no signature used must not cover a later one.
	defer s.forget()
	return s.online("Signing in", func(ctx context.Context, l link.Link, id Identity) error {
		opts := s.authOptions()
		opts.PIN, opts.Biometric, opts.Checked = v.PIN, v.Biometric, v.Checked
		res, err := Authenticate(ctx, l, id, s.card, opts)
		if err != nil {
			return err
		}
		s.c.enter(StateResult)
		if res.OK() {
			s.c.show("Signed in", "Card ..."+last4(res.CardNumber), res.CVM.String(), "OK")
		} else {
			s.c.show("Not signed in", clip(res.Code.String()), "", "OK")
		}
		return s.ack()
	})
}

func last4(n string) string {
	if len(n) < 4 {
		return n
	}
	return n[len(n)-4:]
}

// buyReference reads a reference code and approves its purchase.
func (s *cardSession) buyReference() error {
	if ok, err := s.needs("a purchase", hal.OpTransaction, 1); !ok {
		return err
	}
	s.c.enter(StateMenu)
	ref, err := s.readDigits(s.hctx, rom.ReferenceLen, func(e string) {
		s.c.show("Buy", "Reference code:", e+strings.Repeat("_", rom.ReferenceLen-len(e)), "OK  CANCEL")
	})
	if err != nil {
		return err
	}
	if len(ref) != rom.ReferenceLen {
		return fmt.Errorf("a reference has %d digits", rom.ReferenceLen)
	}
	return s.buy(ref)
}

// buyPushed approves the purchase pushed to the card.
func (s *cardSession) buyPushed() error {
	if ok, err := s.needs("a purchase", hal.OpTransaction, 1); !ok {
		return err
	}
	return s.buy("")
}

// drain drops the keys pressed before now (a second OK pressed while the
// device talked to the server), so that only a key pressed while the
// holder sees the transaction answers it. It reads what Keypad.Key
// returns with a context already ended.
func (s *cardSession) drain() {
	done, cancel := context.WithCancel(s.hctx)
	cancel()
	for range 64 {
		k, err := s.c.Keypad.Key(done)
		if err != nil {
			return
		}
		s.c.Log.Info("key pressed before the review, ignored", "key", k.String())
	}
}

// review is the Confirm hook: it shows t and waits for OK or CANCEL.
func (s *cardSession) review(title string) func(ctx context.Context, t txn.Transaction) (bool, error) {
	return func(ctx context.Context, t txn.Transaction) (bool, error) {
		s.c.enter(StateReview)
		// The server says nothing until the holder answers: a link that
		// drops meanwhile is seen at once.
		ctx, stop := s.watchLink(ctx)
		defer stop()
		s.drain()
		s.c.show(clip(t.Merchant), clip(t.Item), clip(title+" "+t.Amount.String()), "OK yes   CANCEL no")
		for {
			k, err := s.key(ctx)
			if err != nil {
				return false, err
			}
			switch k {
			case hal.KeyOK:
				return true, nil
			case hal.KeyCancel:
				return false, nil
			}
		}
	}
}

// verify is the Verify hook of a purchase or a load.
func (s *cardSession) verify(what string, online bool) VerifyFunc {
	return func(ctx context.Context, t txn.Transaction, accepted protocol.CVMSet) (AuthOptions, error) {
		ctx, stop := s.watchLink(ctx)
		defer stop()
		v, err := s.verifyHolder(ctx, clip(what+" "+t.Amount.String()), accepted, online)
		if err == nil {
			s.c.enter(StateCommunicating)
			s.c.show(clip(what+" "+t.Amount.String()), "", "Approving...")
		}
		return v, err
	}
}

// buy approves the purchase of ref, or the one pushed to the card.
func (s *cardSession) buy(ref string) error { return s.buyAttempt(ref, 0) }

// buyAttempt is buy; attempt counts the links that dropped during the
// holder's review.
func (s *cardSession) buyAttempt(ref string, attempt int) error {
	var res BuyResult
	err := s.online("Fetching purchase", func(ctx context.Context, l link.Link, id Identity) error {
		opts := BuyOptions{AuthOptions: s.authOptions(), Reference: ref, Confirm: s.review("Pay"), Verify: s.verify("Pay", true)}
		var err error
		res, err = Buy(ctx, l, id, s.card, opts)
		return err
	})
	if err == nil {
		return s.bought(res)
	}
	cardGone := errors.Is(err, reader.ErrCardRemoved) || errors.Is(context.Cause(s.hctx), errCardRemoved)
	p := &pendingTxn{card: s.info.CardNumber, reference: ref, id: res.Transaction.ID, approval: res.Approval, reason: "link lost"}
	if p.approval != nil && p.approval.PINBlock != nil {
		// The PIN block is under this session's key: a new session could
		// not read it (and the server would count a wrong PIN). The
		// device does not keep the PIN: it declines instead.
		p.approval = nil
	}
	if cardGone {
		p.reason = "card removed"
	}
	var perr *protocol.Error
	switch {
	case errors.Is(err, errLinkLost) && res.Approval == nil && !cardGone && attempt < rom.ReviewRedials:
		// The link dropped while the holder reviewed or typed the PIN:
		// they approved nothing yet. Say so at once and fetch the
		// purchase again (the server offers the same transaction); the
		// holder reviews it anew.
		s.c.Log.Info("link lost during the review", "err", err)
		s.c.enter(StateError)
		s.c.show("Link lost", "", "Reconnecting...")
		s.forget()
		return s.buyAttempt(ref, attempt+1)
	case res.Code == protocol.CodeHolderDeclined:
		// The server was told on the open channel.
		s.c.Log.Info("purchase declined on the device", "reason", err)
		if e := s.end(err); e != nil {
			return e
		}
		s.c.enter(StateResult)
		s.c.show("Not paid", clip(message(err)), "Purchase cancelled", "OK")
		return s.ack()
	case errors.As(err, &perr):
		return err
	case res.answered && res.Code == protocol.CodeOK:
		// Paid; the card did not take every good.
		if !cardGone {
			return err
		}
		// The server delivers them again for the reference, or, for a
		// pushed purchase, as the card's last paid.
	case res.Approval == nil && res.Transaction.ID == ([16]byte{}):
		return err // nothing was offered: nothing to settle
	}
	s.c.setPending(p)
	s.c.Log.Info("purchase interrupted", "reason", p.reason, "signed", p.approval != nil, "err", err)
	if cardGone {
		return s.end(errCardRemoved) // settled when the card comes back
	}
	if e := s.end(err); e != nil {
		return e
	}
	s.c.enter(StateError)
	s.c.show("Link lost", "", "Reconnecting...")
	s.c.enter(StateCommunicating)
	return s.settle()
}

// bought shows a paid (or refused) purchase and prints its receipt.
func (s *cardSession) bought(res BuyResult) error {
	s.c.enter(StateResult)
	t := res.Transaction
	if !res.OK() {
		third := clip(t.Merchant)
		if res.Code == protocol.CodePINIncorrect {
			third = tries(res.TriesLeft)
		}
		s.c.show("Not paid", clip(res.Code.String()), third, "OK")
		return s.ack()
	}
	goods := ""
	if n := len(res.Goods); n > 0 {
		goods = fmt.Sprintf("%d e-good(s) stored", n)
	}
	if res.PaidBefore {
		s.c.show("Paid before", goods, "", "OK")
		return s.ack()
	}
	s.c.show("Paid "+t.Amount.String(), clip(t.Merchant), goods, "OK")
	s.print(hal.Receipt{
		Title: t.Merchant,
		Lines: []string{t.Item, t.Amount.String(), t.Time.UTC().Format("2006-01-02 15:04:05 UTC"),
			"Card ..." + last4(res.CardNumber), "Approved: " + res.CVM.String()},
		Footer: "Transaction " + hex.EncodeToString(t.ID[:8]),
	})
	return s.ack()
}

// print prints r when there is a printer and the power for all the
// lines it prints (hal.Printer.Lines: title, blank, wrapped and feed
// lines), spent before it starts; a receipt the energy does not cover is
// not begun. A failure is logged: the payment stands, with or without
// its receipt.
func (s *cardSession) print(r hal.Receipt) {
	if s.c.Printer == nil || s.set.NoReceipts {
		return
	}
	n := s.c.Printer.Lines(r)
	// Use refuses as Check would, spending nothing, or spends it all.
	if err := s.c.use(hal.OpPrinter, n); err != nil {
		s.c.Log.Info("receipt not printed", "lines", n, "err", err)
		return
	}
	if err := s.c.Printer.Print(s.ctx, r); err != nil {
		s.c.Log.Warn("printer", "err", err)
	}
}

// settle finishes the interrupted purchase with the server: it sends the
// card's approval again when the server offers the same transaction
// (the server takes it once: a second copy is answered with the result
// of the first), or declines the transaction when the card did not sign
// it, and stores goods a lost answer carried. It keeps the purchase
// pending when the server cannot be reached.
func (s *cardSession) settle() error {
	p := s.c.pending
	var res BuyResult
	err := s.online("Earlier purchase", func(ctx context.Context, l link.Link, id Identity) error {
		opts := BuyOptions{AuthOptions: s.authOptions(), Reference: p.reference, Resume: p.approval,
			Confirm: func(ctx context.Context, t txn.Transaction) (bool, error) {
				if t.ID != p.id {
					return false, errLeave
				}
				return false, fmt.Errorf("%s (%w)", p.reason, ErrInterrupted)
			},
			Verify: func(context.Context, txn.Transaction, protocol.CVMSet) (AuthOptions, error) {
				return AuthOptions{}, errors.New("not asked")
			}}
		var err error
		res, err = Buy(ctx, l, id, s.card, opts)
		return err
	})
	var perr *protocol.Error
	switch {
	case errors.Is(err, errShown):
		return nil // too little power to try now: later
	case err == nil:
		s.c.setPending(nil)
		return s.bought(res)
	case errors.Is(err, errLeave), errors.As(err, &perr):
		// Not offered again: paid or declined by now, or expired.
		s.c.setPending(nil)
		s.c.enter(StateResult)
		s.c.show("Earlier purchase", "is closed", "", "OK")
		return s.ack()
	case res.Code == protocol.CodeHolderDeclined:
		s.c.setPending(nil)
		s.c.enter(StateResult)
		s.c.show("Earlier purchase", "cancelled", clip(p.reason), "OK")
		return s.ack()
	}
	if e := s.end(err); e != nil {
		return e
	}
	s.c.enter(StateError)
	s.c.show("Server unreachable", "Earlier purchase", "settled later", "OK")
	return s.ack()
}

// readAmount reads an amount in the purse's currency, typed in minor
// units (2 0 0 0 is 20.00).
func (s *cardSession) readAmount(title string, cur money.Currency) (money.Amount, error) {
	s.c.enter(StateMenu)
	digits, err := s.readDigits(s.hctx, rom.MaxAmountDigits, func(e string) {
		n, _ := strconv.ParseInt("0"+e, 10, 64)
		s.c.show(title, "Amount:", money.Amount{Minor: n, Currency: cur}.String(), "OK  CLEAR  CANCEL")
	})
	if err != nil {
		return money.Amount{}, err
	}
	n, _ := strconv.ParseInt("0"+digits, 10, 64)
	if n <= 0 {
		return money.Amount{}, errors.New("no amount given")
	}
	return money.Amount{Minor: n, Currency: cur}, nil
}

// purseAmount starts a purse service: the power for n operations op, the
// purse read, the amount typed under title (at most the balance when
// debit), then the power for n card writes. ok is false when the service
// does not go on: err says why, or is nil when the holder was shown a
// refusal for low power.
func (s *cardSession) purseAmount(what, title string, op hal.Operation, n int, debit bool) (money.Amount, bool, error) {
	if ok, err := s.needs(what, op, n); !ok {
		return money.Amount{}, false, err
	}
	before, err := s.card.Purse(s.hctx)
	if err != nil {
		return money.Amount{}, false, err
	}
	amount, err := s.readAmount(title, before.Balance.Currency)
	if err != nil {
		return money.Amount{}, false, err
	}
	if debit && amount.Minor > before.Balance.Minor {
		return money.Amount{}, false, fmt.Errorf("the purse holds only %s", before.Balance)
	}
	if ok, err := s.needs(what, hal.OpCardWrite, n); !ok {
		return money.Amount{}, false, err
	}
	return amount, true, nil
}

// load loads the purse from the holder's account.
func (s *cardSession) load() error {
	amount, ok, err := s.purseAmount("a purse load", "Load purse", hal.OpTransaction, 1, false)
	if !ok {
		return err
	}
	var res PurseResult
	err = s.online("Loading purse", func(ctx context.Context, l link.Link, id Identity) error {
		opts := LoadOptions{AuthOptions: s.authOptions(), Amount: amount, Confirm: s.review("Load"), Verify: s.verify("Load", true)}
		var err error
		res, err = Load(ctx, l, id, s.card, opts)
		return err
	})
	if err != nil {
		if s.end(err) == nil && res.Transaction.ID != ([16]byte{}) && res.Code != protocol.CodeHolderDeclined {
			// The server keeps a load it signed for the next request.
			s.c.enter(StateError)
			s.c.show("Load interrupted", "Load again to", "finish it", "OK")
			return s.ack()
		}
		return err
	}
	s.c.enter(StateResult)
	if !res.OK() {
		s.c.show("Not loaded", clip(res.Code.String()), "", "OK")
		return s.ack()
	}
	s.c.show("Loaded "+res.Loaded.Amount.String(), "Purse "+res.After.Balance.String(), "", "OK")
	return s.ack()
}

// unload moves money from the purse back to the holder's account: the
// server offers the unload, the holder reviews it and gives their PIN or
// finger (the card debits its purse only after verifying the holder
// itself), and the server credits the account.
func (s *cardSession) unload() error {
	amount, ok, err := s.purseAmount("a purse unload", "Unload purse", hal.OpTransaction, 1, true)
	if !ok {
		return err
	}
	var res PurseResult
	err = s.online("Unloading purse", func(ctx context.Context, l link.Link, id Identity) error {
		opts := LoadOptions{AuthOptions: s.authOptions(), Amount: amount, Confirm: s.review("Unload"), Verify: s.verify("Unload", false)}
		var err error
		res, err = Unload(ctx, l, id, s.card, opts)
		return err
	})
	if err != nil && res.Counter != 0 && s.end(err) == nil {
		// The card debited its purse and signed the debit, but the
		// server's credit was not confirmed: the device keeps no
		// unload to resend (a limit). Say what happened.
		s.c.Log.Warn("unload not confirmed after the card debited its purse", "amount", amount.String(), "counter", res.Counter, "err", err)
		s.c.enter(StateError)
		s.c.show("Unload interrupted", clip("Purse debited "+amount.String()), "Not confirmed:", "ask the issuer  OK")
		return s.ack()
	}
	if err != nil {
		return err
	}
	s.c.enter(StateResult)
	if !res.OK() {
		s.c.show("Not unloaded", clip(res.Code.String()), "", "OK")
		return s.ack()
	}
	s.c.show("Unloaded "+res.Transaction.Amount.String(), "Purse "+res.After.Balance.String(), "to your account", "OK")
	return s.ack()
}

// pay pays the device's payee from the purse, offline: the card debits
// itself and signs a receipt the merchant redeems later.
func (s *cardSession) pay() error {
	amount, ok, err := s.purseAmount("a payment", clip("Pay "+s.set.Payee), hal.OpCardWrite, 2, true)
	if !ok {
		return err
	}
	t := txn.Transaction{Merchant: s.set.Payee, Item: "Purchase", Amount: amount,
		Time: s.c.Clock().UTC().Truncate(time.Second), Nonce: make([]byte, 16)}
	r := s.c.Rand
	if r == nil {
		r = rand.Reader
	}
	if _, err := r.Read(t.ID[:]); err != nil {
		return err
	}
	if _, err := r.Read(t.Nonce); err != nil {
		return err
	}
	if err := t.Validate(); err != nil {
		return err
	}
	ok, err = s.review("Pay")(s.hctx, t)
	if err != nil {
		return err
	}
	if !ok {
		return errCancelled
	}
	if _, err := s.verifyHolder(s.hctx, clip("Pay "+amount.String()), offline, false); err != nil {
		return err
	}
	defer s.forget()
	d, err := s.card.Debit(s.hctx, &t)
	if err != nil {
		return err
	}
	rc := PayReceipt{CardNumber: s.info.CardNumber, Transaction: t, DebitReceipt: d}
	if s.c.Receipts != nil {
		if err := s.c.Receipts(s.ctx, rc); err != nil {
			s.c.Log.Warn("receipt not kept", "err", err)
		}
	}
	s.print(hal.Receipt{Title: t.Merchant,
		Lines: []string{t.Item, amount.String(), t.Time.Format("2006-01-02 15:04:05 UTC"),
			"Card ..." + last4(s.info.CardNumber), "Paid from the purse", "Purse " + d.Balance.String()},
		Footer: "Receipt " + hex.EncodeToString(t.ID[:8])})
	s.c.enter(StateResult)
	s.c.show("Paid "+amount.String(), clip(t.Merchant), "Purse "+d.Balance.String(), "OK")
	return s.ack()
}

// balance shows the purse.
func (s *cardSession) balance() error {
	p, err := s.card.Purse(s.hctx)
	if err != nil {
		return err
	}
	s.c.enter(StateResult)
	s.c.show("Purse", p.Balance.String(), fmt.Sprintf("last load #%d", p.Seq), "OK")
	return s.ack()
}

// log pages through the card's transaction log, newest first.
func (s *cardSession) log() error {
	recs, err := s.card.Log(s.hctx)
	if err != nil {
		return err
	}
	s.c.enter(StateResult)
	if len(recs) == 0 {
		s.c.show("Card log", "empty", "", "OK")
		return s.ack()
	}
	for i, r := range recs {
		head := fmt.Sprintf("%d/%d %s", i+1, len(recs), r.Purpose)
		rows := []string{clip(head), "", "", "OK next CANCEL end"}
		if t := r.Transaction; t != nil {
			rows[1], rows[2] = clip(t.Merchant), clip(t.Amount.String()+" "+r.CVM.String())
		} else {
			rows[1], rows[2] = fmt.Sprintf("counter %d", r.Counter), clip(r.CVM.String())
		}
		s.c.show(rows...)
		k, err := s.key(s.hctx)
		if err != nil {
			return err
		}
		if k == hal.KeyCancel {
			break
		}
	}
	return nil
}

// goods pages through the e-goods on the card and their content.
func (s *cardSession) goods() error {
	items, err := s.card.Items(s.hctx)
	if err != nil {
		return err
	}
	s.c.enter(StateResult)
	if len(items) == 0 {
		s.c.show("E-goods", "none on the card", "", "OK")
		return s.ack()
	}
	for i, it := range items {
		s.c.show(fmt.Sprintf("E-good %d/%d", i+1, len(items)), clip(it.Title), it.Kind.String(), "OK next F2 show")
		k, err := s.key(s.hctx)
		if err != nil {
			return err
		}
		switch k {
		case hal.KeyCancel:
			return nil
		case hal.KeyF2:
			full, _, err := s.card.ReadItem(s.hctx, it.ID)
			if err != nil {
				return err
			}
			rows := wrap(string(full.Content))
			for len(rows) > 0 {
				n := min(len(rows), hal.Rows-1)
				page := append(append([]string{}, rows[:n]...), make([]string, hal.Rows-1-n)...)
				s.c.show(append(page, "OK more")...)
				rows = rows[n:]
				if _, err := s.key(s.hctx); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// newPIN reads a new PIN twice.
func (s *cardSession) newPIN() (string, error) {
	for {
		a, _, err := s.readPIN(s.hctx, "New PIN", false)
		if err != nil {
			return "", err
		}
		b, _, err := s.readPIN(s.hctx, "New PIN again", false)
		if err != nil {
			return "", err
		}
		if a == b {
			return a, nil
		}
		s.c.show("The PINs differ", "", "", "OK try again")
		if _, err := s.key(s.hctx); err != nil {
			return "", err
		}
	}
}

// changePIN changes the card's PIN.
func (s *cardSession) changePIN() error {
	if ok, err := s.needs("a PIN change", hal.OpCardWrite, 1); !ok {
		return err
	}
	old, _, err := s.readPIN(s.hctx, "Current PIN", false)
	if err != nil {
		return err
	}
	pin, err := s.newPIN()
	if err != nil {
		return err
	}
	if ok, err := s.needs("a card write", hal.OpCardWrite, 1); !ok {
		return err
	}
	if err := s.card.ChangePIN(s.hctx, old, pin); err != nil {
		return err
	}
	s.c.enter(StateResult)
	s.c.show("PIN changed", "", "", "OK")
	return s.ack()
}

// unblockPIN resets the PIN's tries with the PUK and sets a new PIN.
func (s *cardSession) unblockPIN() error {
	if ok, err := s.needs("a PIN unblock", hal.OpCardWrite, 1); !ok {
		return err
	}
	puk, _, err := s.readPIN(s.hctx, "PUK", false)
	if err != nil {
		return err
	}
	pin, err := s.newPIN()
	if err != nil {
		return err
	}
	if ok, err := s.needs("a card write", hal.OpCardWrite, 1); !ok {
		return err
	}
	if err := s.card.UnblockPIN(s.hctx, puk, pin); err != nil {
		var pe *iso7816.PINError
		if errors.As(err, &pe) {
			return fmt.Errorf("wrong PUK, %d tries left", pe.Retries)
		}
		return err
	}
	s.c.enter(StateResult)
	s.c.show("PIN unblocked", "", "", "OK")
	return s.ack()
}

// tries says how many PIN tries are left.
func tries(n int) string {
	if n == 1 {
		return "1 try left"
	}
	return fmt.Sprintf("%d tries left", n)
}
