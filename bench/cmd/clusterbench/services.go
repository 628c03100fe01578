package main

import (
	"encoding/binary"
	"io"
	"net"
	"sync"
)

// services are the device-side servers every playnode points at, in this
// process: echo (64-byte round trips), sink (reads to EOF, then answers
// the byte count in 8 bytes) and source (reads an 8-byte count, sends that
// many bytes, closes).
type services struct {
	echo, sink, source net.Listener
	wg                 sync.WaitGroup
	mu                 sync.Mutex // guards conns
	conns              map[net.Conn]struct{}
}

func startServices() (*services, error) {
	s := &services{conns: map[net.Conn]struct{}{}}
	for _, l := range []struct {
		ln    *net.Listener
		serve func(net.Conn)
	}{{&s.echo, serveEcho}, {&s.sink, serveSink}, {&s.source, serveSource}} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			s.close()
			return nil, err
		}
		*l.ln = ln
		s.wg.Go(func() { s.accept(ln, l.serve) })
	}
	return s, nil
}

func (s *services) accept(ln net.Listener, serve func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Go(func() {
			serve(c)
			c.Close()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		})
	}
}

// close stops the listeners and open connections and waits for them.
func (s *services) close() {
	for _, ln := range []net.Listener{s.echo, s.sink, s.source} {
		if ln != nil {
			ln.Close()
		}
	}
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func serveEcho(c net.Conn) {
	buf := make([]byte, 4096)
	io.CopyBuffer(c, struct{ io.Reader }{c}, buf)
}

func serveSink(c net.Conn) {
	n, err := io.CopyBuffer(io.Discard, c, make([]byte, 256<<10))
	if err != nil {
		return
	}
	var ack [8]byte
	binary.BigEndian.PutUint64(ack[:], uint64(n))
	c.Write(ack[:])
}

func serveSource(c net.Conn) {
	var req [8]byte
	if _, err := io.ReadFull(c, req[:]); err != nil {
		return
	}
	left := int64(binary.BigEndian.Uint64(req[:]))
	buf := make([]byte, 256<<10)
	for left > 0 {
		n, err := c.Write(buf[:min(int64(len(buf)), left)])
		if err != nil {
			return
		}
		left -= int64(n)
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
}
