package server_test

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"cardlink/internal/applet/wallet/wallettest"
	"cardlink/internal/channel"
	"cardlink/internal/device"
	"cardlink/internal/server"
	"cardlink/internal/server/servertest"
)

// plainLink hides the deadlines of a net.Conn: a link.Link and nothing more.
type plainLink struct{ c net.Conn }

func (p plainLink) Read(b []byte) (int, error)  { return p.c.Read(b) }
func (p plainLink) Write(b []byte) (int, error) { return p.c.Write(b) }
func (p plainLink) Close() error                { return p.c.Close() }

// TestServeLink serves a device session over a link without deadlines
// (as a modem link may be): the device authenticates, and ServeLink
// returns once the device hangs up.
func TestServeLink(t *testing.T) {
	b := newBed(t, servertest.SQLite(t), server.Config{})
	srv := server.New(server.Config{Auth: b.svc, Store: b.st})
	dc, sc := net.Pipe()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.ServeLink(ctx, plainLink{sc}, "pipe")
	}()
	res, err := device.Authenticate(ctx, plainLink{dc}, b.id, b.card.Client, device.AuthOptions{PIN: wallettest.PIN})
	if err != nil || !res.OK() {
		t.Fatalf("Authenticate() over ServeLink = %+v, %v; want success", res, err)
	}
	dc.Close()
	select {
	case <-done:
	case <-time.After(testTimeout):
		t.Fatal("ServeLink did not return after the device hung up")
	}
}

// TestServeLinkCancel checks that ending ctx cuts off a device waiting to
// send over a link without deadlines, and that ServeLink closes the link.
func TestServeLinkCancel(t *testing.T) {
	b := newBed(t, servertest.SQLite(t), server.Config{})
	srv := server.New(server.Config{Auth: b.svc, Store: b.st})
	dc, sc := net.Pipe()
	defer dc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.ServeLink(ctx, plainLink{sc}, "pipe")
	}()
	// A device that makes its channel and then says nothing.
	dctx, dcancel := context.WithTimeout(context.Background(), testTimeout)
	defer dcancel()
	if _, err := channel.Dial(dctx, plainLink{dc}, channel.Config{Static: b.id.Static, ServerPub: b.pubs[0]}); err != nil {
		t.Fatalf("channel.Dial() = %v", err)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(testTimeout):
		t.Fatal("ServeLink did not return after ctx ended")
	}
	dc.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := dc.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("device Read after ServeLink returned = %v, want io.EOF (link closed)", err)
	}
}
