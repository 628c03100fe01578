//go:build !linux

package mux

import (
	"net"
	"time"
)

// notSentLowat is Linux only; elsewhere the kernel's unsent buffer is as
// the system configures it and only the packet size is paced.
func notSentLowat(net.Conn) func(int) { return nil }

// tcpQueue is Linux only.
func tcpQueue(net.Conn) func() (int, float64, time.Duration, bool) { return nil }

// socketWriter is Linux only: elsewhere the pacer times whole writes.
func socketWriter(net.Conn) func([]byte) (int, time.Duration, error) { return nil }
