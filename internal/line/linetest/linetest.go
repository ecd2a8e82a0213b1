// Package linetest starts a telephone switch (package line) for tests: on
// a free loopback port, stopped when the test ends.
package linetest

import (
	"context"
	"net"
	"testing"
	"time"

	"cardlink/internal/line"
)

// Start serves a switch with cfg on 127.0.0.1 until the test ends, and
// returns it with its address. At the end it stops the switch (every
// party gets line.ErrShutdown) and fails the test if the switch does not
// stop within 20 s or Serve failed.
func Start(tb testing.TB, cfg line.Config) (*line.Switch, string) {
	tb.Helper()
	sw, err := line.NewSwitch(cfg)
	if err != nil {
		tb.Fatalf("linetest: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("linetest: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sw.Serve(ctx, ln) }()
	tb.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("linetest: serving: %v", err)
			}
		case <-time.After(20 * time.Second):
			tb.Errorf("linetest: the switch did not stop 20 s after the test")
		}
	})
	return sw, ln.Addr().String()
}
