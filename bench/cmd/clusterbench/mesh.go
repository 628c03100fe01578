package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"time"

	"paradigm/bench/benchkit"
)

// path is one way from the benchmark client to the measured playnode's
// services: straight to them, through its home relay's portaliases, or
// through another relay's (one mesh hop).
type path struct {
	name               string
	echo, sink, source string
}

// hopFigures are the mesh hop's figures per path.
type hopFigures struct {
	rtt, conn        map[string][]time.Duration // sorted
	upMiBs, downMiBs map[string][]float64       // one per round
	// CPU seconds per GiB moved in the bulk transfers: of the three
	// relay processes together, and of this process (client, playnode,
	// services).
	relayCPU, selfCPU map[string]float64
}

// measureHop measures every path side by side: the samples of each
// figure are taken in rounds that visit every path in turn, so that a
// change of load on this shared machine hits all paths alike.
func measureHop(ctx context.Context, s *settings, paths []path, relayPIDs []int) (*hopFigures, error) {
	h := &hopFigures{rtt: map[string][]time.Duration{}, conn: map[string][]time.Duration{},
		upMiBs: map[string][]float64{}, downMiBs: map[string][]float64{},
		relayCPU: map[string]float64{}, selfCPU: map[string]float64{}}
	relayCPUNow := func() float64 {
		var sum float64
		for _, pid := range relayPIDs {
			sum += cpuSeconds(pid)
		}
		return sum
	}
	gib := map[string]float64{}
	logf("mesh hop: %d round trips on a kept connection per path", s.rttN)
	if err := h.roundTrips(ctx, s, paths); err != nil {
		return nil, err
	}
	logf("mesh hop: %d new connections per path", s.connN)
	if err := h.newConns(ctx, s, paths); err != nil {
		return nil, err
	}
	logf("mesh hop: %d x %d MiB each way per path", s.bulkRounds, s.bulk>>20)
	for range s.bulkRounds {
		for _, p := range paths {
			r0, s0 := relayCPUNow(), cpuSeconds(os.Getpid())
			up, err := upload(ctx, p.sink, s.bulk)
			if err != nil {
				return nil, fmt.Errorf("%s: upload: %w", p.name, err)
			}
			down, err := download(ctx, p.source, s.bulk)
			if err != nil {
				return nil, fmt.Errorf("%s: download: %w", p.name, err)
			}
			h.relayCPU[p.name] += relayCPUNow() - r0
			h.selfCPU[p.name] += cpuSeconds(os.Getpid()) - s0
			gib[p.name] += 2 * float64(s.bulk) / (1 << 30)
			h.upMiBs[p.name] = append(h.upMiBs[p.name], up)
			h.downMiBs[p.name] = append(h.downMiBs[p.name], down)
		}
	}
	for name, g := range gib {
		h.relayCPU[name] /= g
		h.selfCPU[name] /= g
	}
	return h, nil
}

const hopRounds = 10

func (h *hopFigures) roundTrips(ctx context.Context, s *settings, paths []path) error {
	conns := make([]net.Conn, len(paths))
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	msg, buf := make([]byte, benchkit.MsgSize), make([]byte, benchkit.MsgSize)
	for i, p := range paths {
		c, err := net.DialTimeout("tcp", p.echo, 5*time.Second)
		if err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
		conns[i] = c
		c.SetDeadline(time.Now().Add(time.Minute))
		for range 100 { // untimed warm-up
			if err := benchkit.RoundTrip(c, msg, buf); err != nil {
				return fmt.Errorf("%s: round trip: %w", p.name, err)
			}
		}
	}
	for range hopRounds {
		for i, p := range paths {
			for range s.rttN / hopRounds {
				t0 := time.Now()
				if err := benchkit.RoundTrip(conns[i], msg, buf); err != nil {
					return fmt.Errorf("%s: round trip: %w", p.name, err)
				}
				h.rtt[p.name] = append(h.rtt[p.name], time.Since(t0))
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	for _, d := range h.rtt {
		slices.Sort(d)
	}
	return nil
}

func (h *hopFigures) newConns(ctx context.Context, s *settings, paths []path) error {
	msg, buf := make([]byte, benchkit.MsgSize), make([]byte, benchkit.MsgSize)
	once := func(addr string) (time.Duration, error) {
		t0 := time.Now()
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return 0, err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if err := benchkit.RoundTrip(c, msg, buf); err != nil {
			return 0, err
		}
		return time.Since(t0), nil
	}
	for _, p := range paths {
		for range 20 {
			if _, err := once(p.echo); err != nil {
				return fmt.Errorf("%s: new conn: %w", p.name, err)
			}
		}
	}
	for range hopRounds {
		for _, p := range paths {
			for range s.connN / hopRounds {
				d, err := once(p.echo)
				if err != nil {
					return fmt.Errorf("%s: new conn: %w", p.name, err)
				}
				h.conn[p.name] = append(h.conn[p.name], d)
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	for _, d := range h.conn {
		slices.Sort(d)
	}
	return nil
}

// dialTransfer connects to a service at addr for one bulk transfer: two
// minutes at most, and closed when ctx ends; done closes it.
func dialTransfer(ctx context.Context, addr string) (c net.Conn, done func(), err error) {
	c, err = net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, nil, err
	}
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	stop := context.AfterFunc(ctx, func() { c.Close() })
	return c, func() { stop(); c.Close() }, nil
}

// upload sends size bytes to the sink at addr and waits for its count:
// MiB/s from the first byte written to the count read.
func upload(ctx context.Context, addr string, size int64) (float64, error) {
	c, done, err := dialTransfer(ctx, addr)
	if err != nil {
		return 0, err
	}
	defer done()
	buf := make([]byte, 256<<10)
	t0 := time.Now()
	for left := size; left > 0; {
		n, err := c.Write(buf[:min(int64(len(buf)), left)])
		if err != nil {
			return 0, err
		}
		left -= int64(n)
	}
	c.(*net.TCPConn).CloseWrite()
	var ack [8]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		return 0, fmt.Errorf("read the sink's count: %w", err)
	}
	took := time.Since(t0)
	if got := int64(binary.BigEndian.Uint64(ack[:])); got != size {
		return 0, fmt.Errorf("sink counted %d bytes, %d sent", got, size)
	}
	return float64(size) / (1 << 20) / took.Seconds(), nil
}

// download asks the source at addr for size bytes and reads them to EOF:
// MiB/s from the request to the end.
func download(ctx context.Context, addr string, size int64) (float64, error) {
	c, done, err := dialTransfer(ctx, addr)
	if err != nil {
		return 0, err
	}
	defer done()
	var req [8]byte
	binary.BigEndian.PutUint64(req[:], uint64(size))
	t0 := time.Now()
	if _, err := c.Write(req[:]); err != nil {
		return 0, err
	}
	n, err := io.CopyBuffer(io.Discard, c, make([]byte, 256<<10))
	if err != nil {
		return 0, err
	}
	took := time.Since(t0)
	if n != size {
		return 0, fmt.Errorf("got %d bytes, asked %d", n, size)
	}
	return float64(size) / (1 << 20) / took.Seconds(), nil
}
