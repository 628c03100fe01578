package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"paradigm/bench/benchkit"
	"slices"
	"sync"
	"time"
)

// iperfResult is what one iperf3 -J run measured at the receiver.
type iperfResult struct {
	bps   float64
	bytes int64
}

// runIperf runs one iperf3 client test against addr.
func runIperf(ctx context.Context, addr string, secs, parallel int, reverse bool, omit int) (iperfResult, error) {
	r, err := benchkit.RunIperf(ctx, addr, secs, parallel, reverse, omit)
	return iperfResult{bps: r.BPS, bytes: r.Bytes}, err
}

const msgSize = benchkit.MsgSize

var roundTrip = benchkit.RoundTrip

// latency holds percentiles of one timed loop, in microseconds.
type latency struct{ p50, p99 float64 }

func percentiles(d []time.Duration) latency {
	slices.Sort(d)
	at := func(q float64) float64 {
		i := int(q*float64(len(d))+0.999999) - 1 // nearest rank
		i = min(max(i, 0), len(d)-1)
		return float64(d[i]) / float64(time.Microsecond)
	}
	return latency{at(0.50), at(0.99)}
}

func echoOnce(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	return roundTrip(c, make([]byte, msgSize), make([]byte, msgSize))
}

// runRTT times n sequential 64-byte round trips on one connection after 100
// untimed ones, bounded by limit.
func runRTT(addr string, n int, limit time.Duration) (latency, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return latency{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(limit))
	msg, buf := bytes.Repeat([]byte{'r'}, msgSize), make([]byte, msgSize)
	times := make([]time.Duration, 0, n)
	for i := range n + 100 {
		t0 := time.Now()
		if err := roundTrip(c, msg, buf); err != nil {
			return latency{}, fmt.Errorf("round trip %d: %w", i, err)
		}
		if i >= 100 {
			times = append(times, time.Since(t0))
		}
	}
	return percentiles(times), nil
}

// runConnRTT times n x (dial, one 64-byte round trip, close) after 20
// untimed ones, bounded by limit.
func runConnRTT(addr string, n int, limit time.Duration) (latency, error) {
	end := time.Now().Add(limit)
	msg, buf := bytes.Repeat([]byte{'c'}, msgSize), make([]byte, msgSize)
	times := make([]time.Duration, 0, n)
	for i := range n + 20 {
		t0 := time.Now()
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return latency{}, err
		}
		c.SetDeadline(end)
		err = roundTrip(c, msg, buf)
		c.Close()
		if err != nil {
			return latency{}, fmt.Errorf("connection %d: %w", i, err)
		}
		if i >= 20 {
			times = append(times, time.Since(t0))
		}
	}
	return percentiles(times), nil
}

// holdConns opens n connections to the echo address (32 dials in flight),
// each verified by a round trip, and returns them open and idle.
func holdConns(addr string, n int, limit time.Duration) ([]net.Conn, error) {
	conns := make([]net.Conn, n)
	errs := make([]error, n)
	sem := make(chan struct{}, 32)
	deadline := time.Now().Add(limit)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				errs[i] = err
				return
			}
			c.SetDeadline(deadline)
			if err := roundTrip(c, make([]byte, msgSize), make([]byte, msgSize)); err != nil {
				c.Close()
				errs[i] = err
				return
			}
			c.SetDeadline(time.Time{})
			conns[i] = c
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		closeAll(conns)
		return nil, fmt.Errorf("hold %d connections: %w", n, err)
	}
	return conns, nil
}

// verifyConns checks that every held connection still answers.
func verifyConns(conns []net.Conn) int {
	ok := 0
	for _, c := range conns {
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if roundTrip(c, make([]byte, msgSize), make([]byte, msgSize)) == nil {
			ok++
		}
	}
	return ok
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}
