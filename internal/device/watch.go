package device

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// errLinkLost is the cause of a holder's step that ended because the
// link to the server failed while the device waited for the holder (the
// review, the PIN): nothing was to come from the server meanwhile, so a
// read that ends is the link going away.
var errLinkLost = errors.New("link lost while the holder decided")

// watchLink is the link of one exchange with the server, which can read
// ahead while the holder decides (watch) so that a link that drops is
// seen at once rather than when the holder answers. What the read-ahead
// gets is handed to the next Read: the channel above loses nothing.
// Read is called by one goroutine at a time (the session); watch by the
// same goroutine, between Reads.
type watchLink struct {
	*closeLink

	mu  sync.Mutex
	bg  chan readResult // the read-ahead under way, nil when none
	buf []byte          // bytes the read-ahead got, not yet read
	err error           // its error, returned once buf is empty
}

// readResult is what a read-ahead got.
type readResult struct {
	b   []byte
	err error
}

// watch starts reading ahead on the link, if it does not already, and
// returns a context that ends when ctx does or, with cause wrapping
// errLinkLost, when the link fails. Call stop when the holder has
// answered; the read-ahead goes on until the next Read takes its result
// (or Close ends it).
func (w *watchLink) watch(ctx context.Context) (wctx context.Context, stop func()) {
	wctx, cancel := context.WithCancelCause(ctx)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		cancel(fmt.Errorf("%w: %w", errLinkLost, w.err))
		return wctx, func() { cancel(nil) }
	}
	if w.bg != nil || len(w.buf) > 0 {
		// Already reading ahead (or the server said something): the
		// earlier watch's read tells this one nothing; leave it be.
		return wctx, func() { cancel(nil) }
	}
	ch := make(chan readResult, 1)
	w.bg = ch
	go func() {
		b := make([]byte, 512)
		n, err := w.closeLink.Read(b)
		if err != nil {
			cancel(fmt.Errorf("%w: %w", errLinkLost, err))
		}
		ch <- readResult{b[:n], err}
	}()
	return wctx, func() { cancel(nil) }
}

// take waits for the read-ahead under way, if any, and keeps what it
// got.
func (w *watchLink) take() {
	w.mu.Lock()
	ch := w.bg
	w.mu.Unlock()
	if ch == nil {
		return
	}
	r := <-ch
	w.mu.Lock()
	w.bg = nil
	w.buf = append(w.buf, r.b...)
	if r.err != nil {
		w.err = r.err
	}
	w.mu.Unlock()
}

// Read returns what a read-ahead got first, then reads the link.
func (w *watchLink) Read(p []byte) (int, error) {
	w.take()
	w.mu.Lock()
	if len(w.buf) > 0 {
		n := copy(p, w.buf)
		w.buf = w.buf[n:]
		w.mu.Unlock()
		return n, nil
	}
	if err := w.err; err != nil {
		w.err = nil
		w.mu.Unlock()
		return 0, err
	}
	w.mu.Unlock()
	return w.closeLink.Read(p)
}

// Close closes the link and waits for a read-ahead to end.
func (w *watchLink) Close() error {
	err := w.closeLink.Close()
	w.take()
	return err
}
