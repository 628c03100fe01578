package mux

import (
	"encoding/binary"
	"sync"

	"golang.org/x/crypto/ssh"
)

// yamux v0.1.2 frame header: version (1) | type (1) | flags (2) |
// stream id (4) | length (4), big endian. A data frame (type 0) is followed
// by length bytes of body.
const (
	yamuxHeaderSize = 12
	yamuxTypeData   = 0
	// sshMaxPayload is the largest data payload x/crypto/ssh puts in one
	// channel packet (channelMaxPacket in ssh/channel.go, which is also what
	// it advertises to its peer).
	sshMaxPayload = 32 << 10
)

// coalescePool holds the scratch buffers that join a header and its body;
// pooled rather than per session so that idle sessions hold none.
var coalescePool = sync.Pool{New: func() any { b := make([]byte, sshMaxPayload); return &b }}

// frameWriter joins each yamux data-frame header with its body into one SSH
// channel write, hence one SSH packet (one seal, one flush, one write(2),
// one receive-side allocation) instead of two. yamux's sendLoop is the only
// writer and writes a data frame as two Writes, header then body, with
// nothing in between; every other frame (window update, ping, go away, and
// a data frame without body, e.g. a bare FIN) is a lone header, written at
// once. Not safe for concurrent Writes, which yamux never does.
type frameWriter struct {
	ch   ssh.Channel
	pace *pacer // packet size; nil: maxPacket
	hdr  [yamuxHeaderSize]byte
	held bool // hdr is a data header waiting for its body
}

func (w *frameWriter) Write(b []byte) (int, error) {
	if w.held {
		return w.writeBody(b)
	}
	if len(b) == yamuxHeaderSize && b[1] == yamuxTypeData && binary.BigEndian.Uint32(b[8:]) > 0 {
		copy(w.hdr[:], b) // yamux reuses its header slice
		w.held = true
		return len(b), nil
	}
	return w.ch.Write(b)
}

// writeBody sends the held header with b, in packets of the pacer's size:
// the header with the body's head, then the rest. b of another length than
// the header announced (not a body: never from yamux v0.1.2) goes out
// after the header on its own.
func (w *frameWriter) writeBody(b []byte) (int, error) {
	w.held = false
	if uint32(len(b)) != binary.BigEndian.Uint32(w.hdr[8:]) {
		if _, err := w.ch.Write(w.hdr[:]); err != nil {
			return 0, err
		}
		return w.ch.Write(b)
	}
	size := w.pace.packetSize()
	head := b[:min(len(b), size-yamuxHeaderSize)]
	bp := coalescePool.Get().(*[]byte)
	p := append(append((*bp)[:0], w.hdr[:]...), head...)
	w.pace.hold(len(p))
	n, err := w.ch.Write(p)
	coalescePool.Put(bp)
	n = max(n-yamuxHeaderSize, 0)
	for err == nil && n < len(b) {
		// Re-read: the size follows the link within a frame too.
		chunk := b[n:min(len(b), n+w.pace.packetSize())]
		w.pace.hold(len(chunk))
		var m int
		m, err = w.ch.Write(chunk)
		n += m
	}
	return n, err
}
