package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"paradigm/bench/benchkit"
)

// Directions of the bulk transfer.
const (
	dirUp   = "device uploads (uplink full)"
	dirDown = "server pushes (downlink full)"
)

// probeEvery is the request interval of each prober: a web app polling a
// device's API.
const probeEvery = 50 * time.Millisecond

// phaseResult is one configuration and direction: round-trip times of the
// 64-byte requests on a kept connection and on a new connection each, and
// the bulk throughput.
//
// beside is the same kept-connection request sent at the same time to the
// device's echo service over the link itself, not through the tunnel: what
// the router's queue (filled by the tunnel's own TCP or QUIC connection)
// costs any traffic beside the tunnel. A tunnel's request minus it is what
// the tunnel's own queues add.
type phaseResult struct {
	kept, fresh []time.Duration
	beside      []time.Duration
	keptErr     error
	freshErr    error
	besideErr   error
	mbit        float64
	bulkErr     error
}

// runPhase fills one direction of the link with iperf3 through t for
// phase, and after warm (the queues fill) probes the echo service with one
// 64-byte request every 50 ms on a kept connection and, concurrently, on a
// new connection per request, until one second before the bulk ends; and
// meanwhile the same on a kept connection to besideAddr, the echo service
// reached over the link without the tunnel.
func runPhase(ctx context.Context, t *tunnel, dir string, phase, warm time.Duration, besideAddr string) (res phaseResult) {
	secs := int(phase / time.Second)
	var wg sync.WaitGroup
	wg.Go(func() {
		r, err := benchkit.RunIperf(ctx, t.iperfAddr, secs, 1, dir == dirUp, 0)
		if err != nil && ctx.Err() == nil {
			// iperf3 -s may still be finishing the previous test.
			time.Sleep(time.Second)
			r, err = benchkit.RunIperf(ctx, t.iperfAddr, secs-1, 1, dir == dirUp, 0)
		}
		res.mbit, res.bulkErr = r.BPS/1e6, err
	})
	defer wg.Wait() // before res is returned: named result
	select {
	case <-time.After(warm):
	case <-ctx.Done():
		return res
	}
	until := time.Now().Add(phase - warm - time.Second)
	var probes sync.WaitGroup
	probes.Go(func() { res.kept, res.keptErr = probeKept(ctx, t.echoAddr, until) })
	probes.Go(func() { res.fresh, res.freshErr = probeFresh(ctx, t.echoAddr, until) })
	probes.Go(func() { res.beside, res.besideErr = probeKept(ctx, besideAddr, until) })
	probes.Wait()
	return res
}

// probeKept sends a 64-byte request every 50 ms (or as soon as the last
// answer came, if later) on one connection until the deadline.
func probeKept(ctx context.Context, addr string, until time.Time) ([]time.Duration, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	msg, buf := bytes.Repeat([]byte{'k'}, benchkit.MsgSize), make([]byte, benchkit.MsgSize)
	var times []time.Duration
	for next := time.Now(); next.Before(until); next = next.Add(probeEvery) {
		time.Sleep(time.Until(next))
		c.SetDeadline(time.Now().Add(10 * time.Second))
		t0 := time.Now()
		if err := benchkit.RoundTrip(c, msg, buf); err != nil {
			return times, fmt.Errorf("kept connection, request %d: %w", len(times), err)
		}
		times = append(times, time.Since(t0))
		next = later(next, time.Now().Add(-probeEvery))
	}
	return times, nil
}

// probeFresh times dial, one 64-byte round trip and close, every 50 ms (or
// as soon as the last ended, if later) until the deadline.
func probeFresh(ctx context.Context, addr string, until time.Time) ([]time.Duration, error) {
	msg, buf := bytes.Repeat([]byte{'n'}, benchkit.MsgSize), make([]byte, benchkit.MsgSize)
	var times []time.Duration
	var d net.Dialer
	d.Timeout = 10 * time.Second
	for next := time.Now(); next.Before(until); next = next.Add(probeEvery) {
		time.Sleep(time.Until(next))
		t0 := time.Now()
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return times, fmt.Errorf("new connection %d: %w", len(times), err)
		}
		c.SetDeadline(t0.Add(10 * time.Second))
		err = benchkit.RoundTrip(c, msg, buf)
		c.Close()
		if err != nil {
			return times, fmt.Errorf("new connection %d: %w", len(times), err)
		}
		times = append(times, time.Since(t0))
		next = later(next, time.Now().Add(-probeEvery))
	}
	return times, nil
}

// later is the later of a and b: the next request starts 50 ms after the
// last one started, or at once if that one took longer.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func echoOnce(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	return benchkit.RoundTrip(c, make([]byte, benchkit.MsgSize), make([]byte, benchkit.MsgSize))
}

// serveEcho is the device's echo service (this program re-executed in the
// namespace as `shapedbench echo ADDR`).
func serveEcho(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		go func() { // ends with its connection; the process is killed at the end of the run
			defer c.Close()
			buf := make([]byte, 4096)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					if _, werr := c.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

// ms is p-quantile of d in milliseconds.
func ms(d []time.Duration, q float64) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	return float64(benchkit.Percentile(s, q)) / float64(time.Millisecond)
}
