//go:build !linux

package vpcd

import "net"

// quickAck does nothing: TCP_QUICKACK is Linux's.
func quickAck(conn net.Conn) {}
