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

	mu       sync.Mutex
	bg       chan struct{} // closed when the read-ahead under way ends; nil when none
	buf      []byte        // bytes the read-ahead got, not yet read
	err      error         // its error, returned once buf is empty
	closed   bool
	watchers map[int]context.CancelCauseFunc // the watches not stopped yet
	next     int
}

// lost is the cause of a watch's end when the link failed with err.
func lost(err error) error { return fmt.Errorf("%w: %w", errLinkLost, err) }

// watch starts reading ahead on the link, if it does not already, and
// returns a context that ends when ctx does or, with cause wrapping
// errLinkLost, when the link fails. Call stop when the holder has
// answered; the read-ahead goes on until the next Read takes what it got
// (or Close ends it). On a closed link it watches nothing.
func (w *watchLink) watch(ctx context.Context) (wctx context.Context, stop func()) {
	wctx, cancel := context.WithCancelCause(ctx)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return wctx, func() { cancel(nil) }
	}
	if w.err != nil {
		cancel(lost(w.err))
		return wctx, func() { cancel(nil) }
	}
	if w.watchers == nil {
		w.watchers = map[int]context.CancelCauseFunc{}
	}
	id := w.next
	w.next++
	w.watchers[id] = cancel
	if w.bg == nil && len(w.buf) == 0 {
		done := make(chan struct{})
		w.bg = done
		go func() {
			defer close(done)
			b := make([]byte, 512)
			n, err := w.closeLink.Read(b)
			w.mu.Lock()
			defer w.mu.Unlock()
			w.bg = nil
			w.buf = append(w.buf, b[:n]...)
			if err != nil {
				w.err = err
				for _, c := range w.watchers {
					c(lost(err))
				}
			}
		}()
	}
	return wctx, func() {
		w.mu.Lock()
		delete(w.watchers, id)
		w.mu.Unlock()
		cancel(nil)
	}
}

// take waits for the read-ahead under way, if any.
func (w *watchLink) take() {
	w.mu.Lock()
	done := w.bg
	w.mu.Unlock()
	if done != nil {
		<-done
	}
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
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	err := w.closeLink.Close()
	w.take()
	return err
}
