package mux

import (
	"fmt"
	"log/slog"
	"net"
	"sync"
)

// quicSocketBuffer is the UDP receive and send buffer quic-go asks for
// (desiredBufferSize in its sys_conn_buffers.go): without it a fast
// transfer overflows the kernel's default buffer (212 KiB on Linux) and
// every drop costs a congestion-window cut.
const quicSocketBuffer = 7 << 20

// socketBufferWarning makes the buffer warning once per process: the limit
// is the host's (a sysctl), not the socket's.
var socketBufferWarning sync.Once

// tuneSocketBuffers raises pconn's buffers to quicSocketBuffer before
// quic-go sees the socket, and logs one Warn through log, with the fix, if
// the kernel caps them lower. quic-go tries the same and, failing, prints
// its own line through the standard log package once per process; the
// program can silence that one with QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING=true.
func tuneSocketBuffers(pconn net.PacketConn, log *slog.Logger) {
	rcv, snd, ok := setSocketBuffers(pconn, quicSocketBuffer)
	warnSmallBuffers(rcv, snd, ok, log)
}

// warnSmallBuffers logs the buffer warning, once per process, when the
// kernel granted less than QUIC wants.
func warnSmallBuffers(rcv, snd int, ok bool, log *slog.Logger) {
	if ok && (rcv < quicSocketBuffer || snd < quicSocketBuffer) {
		socketBufferWarning.Do(func() {
			log.Warn("udp socket buffers too small for quic", "err", fmt.Errorf(
				"receive %d KiB, send %d KiB, want %d KiB: raise the limits with sysctl -w net.core.rmem_max=7500000 net.core.wmem_max=7500000",
				rcv>>10, snd>>10, quicSocketBuffer>>10))
		})
	}
}
