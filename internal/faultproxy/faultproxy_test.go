package faultproxy

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"

	"paradigm/internal/testenv"
)

const deadline = 10 * time.Second

// echo is a loopback service that echoes each connection until the client
// half-closes.
func echo(t *testing.T) string {
	t.Helper()
	return testenv.Serve(t, deadline, func(c *net.TCPConn) {
		io.Copy(c, c)
		c.CloseWrite()
	})
}

func newProxy(t *testing.T, target string) *Proxy {
	t.Helper()
	p, err := New(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func dial(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(deadline))
	return c.(*net.TCPConn)
}

// roundTrip sends size random bytes, half-closes and checks the echo.
func roundTrip(t *testing.T, c *net.TCPConn, size int) {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write: %v", err)
	}
	if sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatalf("echo: got %d bytes, want the %d sent, byte-exact", len(got), len(data))
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testenv.WaitFor(t, deadline, what, cond)
}

func TestForwardsByteExactWithHalfClose(t *testing.T) {
	p := newProxy(t, echo(t))
	roundTrip(t, dial(t, p.Addr()), 4<<20)
	if got := p.Accepted(); got != 1 {
		t.Fatalf("accepted: got %d, want 1", got)
	}
}

func TestCutResetsBothSides(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p := newProxy(t, ln.Addr().String())
	c := dial(t, p.Addr())
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.SetDeadline(time.Now().Add(deadline))
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(s, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if n := p.Cut(); n != 1 {
		t.Fatalf("Cut: got %d connections, want 1", n)
	}
	for name, conn := range map[string]net.Conn{"client": c, "server": s} {
		_, err := conn.Read(make([]byte, 1))
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("%s read after cut: got %v, want ECONNRESET", name, err)
		}
	}
	waitFor(t, "the cut connection to be forgotten", func() bool { return len(p.Conns()) == 0 })
}

func TestBlackholeDropsAndKeepsOpen(t *testing.T) {
	p := newProxy(t, echo(t))
	c := dial(t, p.Addr())
	waitFor(t, "the connection", func() bool { return len(p.Conns()) == 1 })
	p.Set(Faults{Blackhole: true})
	if _, err := c.Write([]byte("lost")); err != nil {
		t.Fatalf("write into a blackhole: %v", err)
	}
	waitFor(t, "the bytes to be dropped", func() bool { return p.Dropped() == 4 })
	p.Restore()
	if _, err := c.Write([]byte("found")); err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "found" {
		t.Fatalf("after restore: got %q, %v; want %q only", got, err, "found")
	}
}

func TestPerConnectionFaults(t *testing.T) {
	p := newProxy(t, echo(t))
	a := dial(t, p.Addr())
	waitFor(t, "first connection", func() bool { return len(p.Conns()) == 1 })
	b := dial(t, p.Addr())
	waitFor(t, "second connection", func() bool { return len(p.Conns()) == 2 })
	conns := p.Conns()
	if conns[0].ID() != 1 || conns[1].ID() != 2 {
		t.Fatalf("ids: got %d, %d; want 1, 2", conns[0].ID(), conns[1].ID())
	}
	conns[0].Set(Faults{Blackhole: true})
	if _, err := a.Write([]byte("lost")); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, b, 64<<10) // the other connection is untouched
	conns[0].Cut()
	if _, err := a.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after the connection's cut: got %v, want ECONNRESET", err)
	}
}

func TestLatencyAndRate(t *testing.T) {
	p := newProxy(t, echo(t))
	const latency = 100 * time.Millisecond
	p.Set(Faults{Latency: latency, Jitter: 20 * time.Millisecond})
	start := time.Now()
	roundTrip(t, dial(t, p.Addr()), 1000)
	// Two one-way delays at least; lower bounds only, never an upper one.
	if got := time.Since(start); got < 2*latency {
		t.Fatalf("round trip through %v latency took %v, want at least %v", latency, got, 2*latency)
	}

	const rate, size = 1 << 20, 512 << 10
	p.Set(Faults{Rate: rate})
	start = time.Now()
	roundTrip(t, dial(t, p.Addr()), size)
	if got, want := time.Since(start), time.Duration(size)*time.Second/rate; got < want {
		t.Fatalf("%d bytes at %d B/s took %v, want at least %v", size, rate, got, want)
	}
}

func TestRestoreCutsShortALongDelay(t *testing.T) {
	p := newProxy(t, echo(t))
	p.Set(Faults{Latency: time.Hour})
	c := dial(t, p.Addr())
	if _, err := c.Write([]byte("late")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the connection", func() bool { return len(p.Conns()) == 1 })
	p.Restore()
	got := make([]byte, 4)
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, []byte("late")) {
		t.Fatalf("after restore: got %q, %v; want %q", got, err, "late")
	}
}

func TestRejectResetsNewConnections(t *testing.T) {
	p := newProxy(t, echo(t))
	p.Set(Faults{Reject: true})
	// The reset may come before or after connect returns.
	if c, err := net.Dial("tcp", p.Addr()); err == nil {
		c.SetDeadline(time.Now().Add(deadline))
		_, err = c.Read(make([]byte, 1))
		c.Close()
		if err == nil {
			t.Fatal("read from a rejected connection succeeded")
		}
	}
	p.Restore()
	roundTrip(t, dial(t, p.Addr()), 1000)
}

func TestCloseWaitsForGoroutines(t *testing.T) {
	target := echo(t)
	before := runtime.NumGoroutine()
	p, err := New(target)
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	for range 10 {
		c, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	waitFor(t, "10 connections", func() bool { return len(p.Conns()) == 10 })
	p.Set(Faults{Latency: time.Hour})
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for _, c := range conns {
		c.Close()
	}
	// The echo server's goroutines end when it sees the reset; the proxy's
	// own are gone already.
	waitFor(t, "goroutines back to the baseline", func() bool { return runtime.NumGoroutine() <= before })
}

func TestSetSource(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p := newProxy(t, ln.Addr().String())
	for _, ip := range []string{"127.0.0.2", "127.0.0.3"} {
		p.SetSource(net.ParseIP(ip))
		dial(t, p.Addr())
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		if got := s.RemoteAddr().(*net.TCPAddr).IP.String(); got != ip {
			t.Errorf("target saw a connection from %s, want %s", got, ip)
		}
	}
}
