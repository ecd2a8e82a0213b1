package device

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// newWatchLink is a watchLink over one end of a pipe; the other end is
// the server.
func newWatchLink(t *testing.T) (*watchLink, net.Conn) {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	closed := make(chan struct{}, 1)
	w := &watchLink{closeLink: &closeLink{Link: a, done: func() { closed <- struct{}{} }}}
	return w, b
}

// TestWatchLinkKeepsBytes: what arrives while the device reads ahead is
// handed to the next Reads, in order, and the watch stays open.
func TestWatchLinkKeepsBytes(t *testing.T) {
	w, srv := newWatchLink(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	wctx, stop := w.watch(ctx)
	msg := []byte("the server's next message, longer than nothing")
	go srv.Write(msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(w, got); err != nil || string(got) != string(msg) {
		t.Fatalf("ReadFull() = %q, %v; want %q", got, err, msg)
	}
	if wctx.Err() != nil {
		t.Errorf("watch ended (%v) though the link is up", context.Cause(wctx))
	}
	stop()
	if err := w.Close(); err != nil {
		t.Errorf("Close() = %v", err)
	}
}

// TestWatchLinkLost: a link that drops while two watches are open ends
// both with errLinkLost; the next Read returns the link's error; a watch
// on a closed link watches nothing.
func TestWatchLinkLost(t *testing.T) {
	w, srv := newWatchLink(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	first, stop1 := w.watch(ctx)
	defer stop1()
	second, stop2 := w.watch(ctx)
	defer stop2()
	srv.Close()
	for i, wctx := range []context.Context{first, second} {
		select {
		case <-wctx.Done():
		case <-ctx.Done():
			t.Fatalf("watch %d did not end when the link dropped", i+1)
		}
		if cause := context.Cause(wctx); !errors.Is(cause, errLinkLost) || !errors.Is(cause, io.EOF) {
			t.Errorf("watch %d ended with %v, want errLinkLost wrapping io.EOF", i+1, cause)
		}
	}
	if n, err := w.Read(make([]byte, 8)); n != 0 || !errors.Is(err, io.EOF) {
		t.Errorf("Read() after the drop = %d, %v; want io.EOF", n, err)
	}
	w.Close()
	third, stop3 := w.watch(ctx)
	defer stop3()
	if third.Err() != nil {
		t.Errorf("a watch on a closed link ended: %v", context.Cause(third))
	}
}

// TestWatchLinkStopped: a watch stopped before the drop is not told; one
// opened after it ends at once.
func TestWatchLinkStopped(t *testing.T) {
	w, srv := newWatchLink(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	old, stop := w.watch(ctx)
	stop()
	srv.Close()
	w.take() // the read-ahead ends with the drop
	if cause := context.Cause(old); errors.Is(cause, errLinkLost) {
		t.Errorf("a stopped watch ended with %v, want context.Canceled", cause)
	}
	late, stop2 := w.watch(ctx)
	defer stop2()
	if cause := context.Cause(late); !errors.Is(cause, errLinkLost) {
		t.Errorf("a watch after the drop = %v, want errLinkLost at once", cause)
	}
	w.Close()
}
