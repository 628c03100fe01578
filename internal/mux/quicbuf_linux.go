package mux

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// setSocketBuffers asks for size bytes each way and reads back what the
// kernel granted (Linux reports twice the granted size, its bookkeeping
// overhead included; quic-go compares the same number). Without
// net.core.rmem_max the request is capped; SO_RCVBUFFORCE lifts the cap
// when the process has CAP_NET_ADMIN. ok is false when pconn is not a
// socket that can be inspected.
func setSocketBuffers(pconn net.PacketConn, size int) (rcv, snd int, ok bool) {
	sc, isSys := pconn.(syscall.Conn)
	if !isSys {
		return 0, 0, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, 0, false
	}
	var getErr error
	err = raw.Control(func(fd uintptr) {
		for _, opt := range []struct{ set, force int }{{unix.SO_RCVBUF, unix.SO_RCVBUFFORCE}, {unix.SO_SNDBUF, unix.SO_SNDBUFFORCE}} {
			if got, _ := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, opt.set); got >= size {
				continue
			}
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt.set, size)
			if got, _ := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, opt.set); got < size {
				unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt.force, size)
			}
		}
		rcv, getErr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		if getErr == nil {
			snd, getErr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
		}
	})
	return rcv, snd, err == nil && getErr == nil
}
