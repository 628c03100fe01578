//go:build !linux

package mux

import (
	"syscall"
	"time"
)

// lastAckAge cannot ask the kernel here: liveness falls back to the bytes
// received alone.
func lastAckAge(syscall.Conn) (time.Duration, bool) { return 0, false }
