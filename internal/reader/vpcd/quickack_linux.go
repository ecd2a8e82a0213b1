package vpcd

import (
	"net"
	"syscall"
)

// quickAck asks Linux to acknowledge what arrives on conn at once instead
// of delaying the ACK (TCP_QUICKACK, tcp(7)); it does nothing for other
// connections. The kernel leaves quick-ACK mode by itself, so serve sets it
// before every read.
//
// Why: vpcd writes a frame's 2-byte length and its payload with two send
// calls on a socket with Nagle's algorithm on, so the payload waits until
// the length is acknowledged — up to 40 ms of delayed ACK per frame, which
// made every APDU through pcscd take 44 ms (measured 2026-11-28, pcsc-lite
// 1.9.9, vsmartcard-vpcd 3.3).
func quickAck(conn net.Conn) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	raw.Control(func(fd uintptr) {
		syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
	})
}
