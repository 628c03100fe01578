package bench

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"paradigm/internal/identity"
	"paradigm/internal/node"
	"paradigm/internal/relay"
)

// pair is an in-process relay and one node connected to it over loopback
// SSH, exposing one device-local service at portalias.
type pair struct {
	portalias string
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

// startPair runs relay and node as paradigm-relay serve and paradigm-node
// run do, with service (a local TCP address) registered as "svc".
func startPair(tb testing.TB, service string) *pair {
	tb.Helper()
	dir := tb.TempDir()
	data := filepath.Join(dir, "relay")
	if err := os.MkdirAll(data, 0o700); err != nil {
		tb.Fatal(err)
	}
	key, err := identity.GenerateKey(filepath.Join(dir, "node.key"), "bench")
	if err != nil {
		tb.Fatal(err)
	}
	if err := relay.Authorize(filepath.Join(data, relay.AuthorizedFile), "bench", key.PublicKey(), ""); err != nil {
		tb.Fatal(err)
	}
	r, err := relay.New(relay.Config{DataDir: data, Listen: "127.0.0.1:0", PortLow: 23000, PortHigh: 23999})
	if err != nil {
		tb.Fatal(err)
	}
	n, err := node.New(node.Config{
		Relay: r.Addr().String(), Fingerprint: identity.Fingerprint(r.HostKey()),
		KeyFile: filepath.Join(dir, "node.key"), Name: "bench",
		Services: []node.Service{{Name: "svc", Addr: service}},
	})
	if err != nil {
		r.Close()
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &pair{cancel: cancel}
	p.wg.Go(func() { r.Run(ctx) })
	p.wg.Go(func() { n.Run(ctx) })
	tb.Cleanup(p.stop)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if ps, ok := r.Online("bench"); ok && len(ps) == 1 {
			p.portalias = net.JoinHostPort("127.0.0.1", strconv.Itoa(int(ps[0].Portalias)))
			return p
		}
		if time.Now().After(deadline) {
			tb.Fatal("node not online after 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (p *pair) stop() {
	p.cancel()
	p.wg.Wait()
}

// serve runs handle for every connection to a new loopback listener.
func serve(tb testing.TB, handle func(net.Conn)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}

const chunk = 1 << 20

// sink reads 1 MiB and answers one byte, for as long as the client sends.
func sink(c net.Conn) {
	buf := make([]byte, chunk)
	for {
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
		if _, err := c.Write([]byte{1}); err != nil {
			return
		}
	}
}

func echo(c net.Conn) {
	io.CopyBuffer(c, struct{ io.Reader }{c}, make([]byte, 4096))
}

// BenchmarkForward1MiB sends 1 MiB per op from a client through the relay's
// portalias, the SSH+yamux session and the node to a local sink, which
// acknowledges each MiB with one byte. Allocations count both roles (and the
// sink); allocs/32KiB is per forwarded splice buffer.
func BenchmarkForward1MiB(b *testing.B) {
	p := startPair(b, serve(b, sink))
	c, err := net.Dial("tcp", p.portalias)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	payload := bytes.Repeat([]byte{'x'}, chunk)
	ack := make([]byte, 1)
	send := func() {
		if _, err := c.Write(payload); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, ack); err != nil {
			b.Fatal(err)
		}
	}
	send() // the stream is open and its window has grown
	b.SetBytes(chunk)
	b.ReportAllocs()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	ops := 0
	for b.Loop() {
		send()
		ops++
	}
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(ops*chunk/(32<<10)), "allocs/32KiB")
}

// BenchmarkRoundTrip64 is one 64-byte request and its echo through the
// tunnel on an open connection: the per-message cost without bulk.
func BenchmarkRoundTrip64(b *testing.B) {
	p := startPair(b, serve(b, echo))
	c, err := net.Dial("tcp", p.portalias)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	msg, buf := bytes.Repeat([]byte{'r'}, 64), make([]byte, 64)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNewConn is one connection through the tunnel: dial the
// portalias, one 64-byte round trip, close.
func BenchmarkNewConn(b *testing.B) {
	p := startPair(b, serve(b, echo))
	msg, buf := bytes.Repeat([]byte{'c'}, 64), make([]byte, 64)
	b.ReportAllocs()
	for b.Loop() {
		c, err := net.Dial("tcp", p.portalias)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}
