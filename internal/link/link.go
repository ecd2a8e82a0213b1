// Package link defines what every device↔server transport offers the layers
// above it: an ordered, reliable byte stream. TCP is one today; the modem,
// serial, infra-red and radio links come later, each turning its medium
// into such a stream (their framing, CRC and retransmission live beneath
// this interface, in their own packages).
//
// The secure channel (package channel) runs over any Link and assumes
// nothing more: no message boundaries, no deadlines, no addresses.
//
// It imports only the standard library and must not import channel,
// protocol or any concrete transport.
package link

import "io"

// Link is an ordered, reliable byte stream between a device and a server.
// Read and Write may be called from two goroutines at once (one reader, one
// writer); Close unblocks both. A Link that also has
// SetDeadline(time.Time) error (as net.Conn does) lets callers bound
// blocking calls; package channel uses it when present.
type Link interface {
	io.Reader
	io.Writer
	io.Closer
}
