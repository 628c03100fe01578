//go:build !linux

package mux

import "net"

// setSocketBuffers asks for size bytes each way. Other systems report the
// granted size differently (or not at all), so nothing is checked there and
// quic-go's own warning is the only one.
func setSocketBuffers(pconn net.PacketConn, size int) (rcv, snd int, ok bool) {
	if c, isBuf := pconn.(interface {
		SetReadBuffer(int) error
		SetWriteBuffer(int) error
	}); isBuf {
		c.SetReadBuffer(size)
		c.SetWriteBuffer(size)
	}
	return 0, 0, false
}
