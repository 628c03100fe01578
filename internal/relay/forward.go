package relay

import (
	"context"
	"errors"
	"net"

	"paradigm/internal/logthrottle"
	"paradigm/internal/mux"
	"paradigm/internal/proto"
)

// forward splices one client connection into a new stream to target t:
// to the playnode's session on this relay, or over the mesh to its home
// relay (mesh.go), which passes it on to the playnode. c is a portalias
// client's TCP connection, or a stream from another relay (relayed). The
// stream header goes out at once and the client's first bytes follow it
// without waiting for the node's status, which is read before any reply
// byte reaches a portalias client (a relayed stream passes it back
// untouched, to the relay that reads it). Bytes are counted as they pass,
// so the snapshot shows a long transfer's progress, not only its total at
// the end.
func (r *Relay) forward(t target, c mux.HalfCloser, remote net.Addr, relayed bool) {
	st := t.st
	service := st.name
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.StreamOpenTimeout)
	var hdr [2 * (2 + proto.MaxNameLen)]byte
	var (
		sess   mux.Session
		stream mux.Stream
		err    error
		log    = r.log
	)
	if t.local != nil {
		sess, log = t.local.mux, t.local.log
		stream, err = sess.OpenStream(ctx)
	} else {
		// Over the mesh the home relay reads the playnode's name first.
		log = r.log.With("playnode", t.playnode, "relay", t.via.ID)
		if sess, err = r.mesh.session(ctx, t.via); err == nil {
			stream, err = sess.OpenStream(ctx)
		}
	}
	cancel()
	if err != nil {
		c.Close()
		r.throttle.Warn("open-stream", logthrottle.Source(remote), "open stream", "playnode", t.playnode, "service", service, "err", err)
		return
	}
	h := hdr[:0]
	if t.local == nil {
		h = proto.AppendStreamHeader(h, t.playnode)
	}
	if _, err := stream.Write(proto.AppendStreamHeader(h, service)); err != nil {
		c.Close()
		stream.Close()
		r.throttle.Warn("open-stream", logthrottle.Source(remote), "write stream header", "playnode", t.playnode, "service", service, "err", err)
		return
	}
	st.open.Add(1)
	st.total.Add(1)
	r.reg.counters.forwarded.Add(1)
	defer st.open.Add(-1)
	// A session that dies while the client's side is idle (the reply
	// already delivered, the client not done sending) must not leave the
	// splice waiting on the client: cut it, with a reset.
	stop := context.AfterFunc(sess.Context(), func() {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		c.Close()
	})
	defer stop()
	in, out, err := mux.Splice(c, &countedStream{Stream: stream, st: st, checked: relayed})
	var se *proto.StreamError
	if errors.As(err, &se) {
		r.throttle.Warn("service-unavailable", logthrottle.Source(remote), "service unavailable on playnode", "playnode", t.playnode, "service", service, "err", se)
		return
	}
	log.Debug("connection closed", "service", service, "remote", remote.String(), "in", in, "out", out, "err", err)
}

// countedStream is the playnode side of a forwarded connection: it reads
// the node's stream status before the first reply byte (unless checked is
// set from the start: a relayed stream passes it on), and counts bytes each
// way.
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

// Write counts p before writing it, and takes back what was not written:
// counted after, the playnode's reply could arrive, be forwarded and be
// counted while this goroutine had not run again since Write returned, and a
// snapshot would show the reply without the request.
func (s *countedStream) Write(p []byte) (int, error) {
	s.st.toNode.Add(uint64(len(p)))
	n, err := s.Stream.Write(p)
	if n < len(p) {
		s.st.toNode.Add(-uint64(len(p) - n))
	}
	return n, err
}
