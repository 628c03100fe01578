package mux

import (
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// lastAckAge asks the kernel how long ago the socket last received a TCP
// acknowledgement.
func lastAckAge(sc syscall.Conn) (time.Duration, bool) {
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var info *unix.TCPInfo
	var serr error
	if err := rc.Control(func(fd uintptr) {
		info, serr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil || serr != nil {
		return 0, false
	}
	return time.Duration(info.Last_ack_recv) * time.Millisecond, true
}
