package relay

import (
	"context"
	"errors"
	"net"

	"paradigm/internal/logthrottle"
	"paradigm/internal/mux"
	"paradigm/internal/proto"
)

// forward splices one client connection of a portalias into a new stream to
// the playnode. The stream header goes out at once and the client's first
// bytes follow it without waiting for the node's status, which is read
// before any reply byte reaches the client. Bytes are counted as they pass,
// so the snapshot shows a long transfer's progress, not only its total at
// the end.
func (r *Relay) forward(s *nodeSession, st *serviceStats, c *net.TCPConn) {
	service := st.name
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.StreamOpenTimeout)
	stream, err := s.mux.OpenStream(ctx)
	cancel()
	if err != nil {
		c.Close()
		r.throttle.Warn("open-stream", logthrottle.Source(c.RemoteAddr()), "open stream", "playnode", s.playnode, "service", service, "err", err)
		return
	}
	var hdr [2 + proto.MaxNameLen]byte
	if _, err := stream.Write(proto.AppendStreamHeader(hdr[:0], service)); err != nil {
		c.Close()
		stream.Close()
		r.throttle.Warn("open-stream", logthrottle.Source(c.RemoteAddr()), "write stream header", "playnode", s.playnode, "service", service, "err", err)
		return
	}
	st.open.Add(1)
	st.total.Add(1)
	r.reg.counters.forwarded.Add(1)
	defer st.open.Add(-1)
	// A session that dies while the client's side is idle (the reply
	// already delivered, the client not done sending) must not leave the
	// splice waiting on the client: cut it, with a reset.
	stop := context.AfterFunc(s.mux.Context(), func() {
		c.SetLinger(0)
		c.Close()
	})
	defer stop()
	in, out, err := mux.Splice(c, &countedStream{Stream: stream, st: st})
	var se *proto.StreamError
	if errors.As(err, &se) {
		r.throttle.Warn("service-unavailable", logthrottle.Source(c.RemoteAddr()), "service unavailable on playnode", "playnode", s.playnode, "service", service, "err", se)
		return
	}
	s.log.Debug("connection closed", "service", service, "remote", c.RemoteAddr().String(), "in", in, "out", out, "err", err)
}

// countedStream is the playnode side of a forwarded connection: it reads
// the node's stream status before the first reply byte, and counts bytes
// each way.
type countedStream struct {
	mux.Stream
	st      *serviceStats
	checked bool
}

func (s *countedStream) Read(p []byte) (int, error) {
	if !s.checked {
		s.checked = true
		if err := proto.ReadStreamStatus(s.Stream); err != nil {
			return 0, err
		}
	}
	n, err := s.Stream.Read(p)
	s.st.fromNode.Add(uint64(n))
	return n, err
}

func (s *countedStream) Write(p []byte) (int, error) {
	n, err := s.Stream.Write(p)
	s.st.toNode.Add(uint64(n))
	return n, err
}
