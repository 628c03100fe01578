// Package mux is the transport layer between a playnode and the relay: one
// authenticated Session per node, carrying many Streams.
//
// # SSH transport flow
//
//	node (client)                                relay (server)
//	TCP connect ---------------------------------> accept
//	"SSH-2.0-..." version, KEX, ed25519 host key   (first 4 bytes must be "SSH-")
//	publickey auth (node key) --------------------> Authorize(remote, user, key) -> playnode
//	open channel "paradigm-mux@v1" ---------------> accept (one; anything else: Prohibited)
//	yamux client  <======= yamux over channel =====> yamux server      (lane 0)
//	OpenStream: control stream -------------------> AcceptStream      (lane 0)
//	AcceptStream <--------------------------------- OpenStream: one per forwarded TCP connection
//	accept (up to 8 in all) <---------------------- open channel "paradigm-mux@v1" when every
//	yamux client  <======= yamux over channel =====> yamux server      lane carries a stream (lane 1..7)
//
// A node's streams spread over its lanes (least-loaded first) because
// x/crypto/ssh fixes each channel's window at 2 MiB, a cap of 2 MiB per
// round trip per channel; an idle node keeps one lane (sshsession.go).
//
// The handshake, authentication and channel open run under one deadline
// (HandshakeTimeout). Global requests are refused, except
// keepalive@openssh.com, which is answered. Liveness is a watchdog on the
// bytes received, with keepalive requests in both directions when the link
// is quiet, see [Options.Keepalive] and liveness.go.
//
// The SSH channels and their yamux sessions live and die together: when one
// yamux gives up (protocol error, Close) the SSH connection and its TCP
// connection are closed; when the SSH connection ends, every yamux ends.
//
// # Flow control and memory
//
// Over SSH, what one end holds for a stream whose reader stalls (a client
// that stops reading, a service that does not read) is bounded by the
// stream's yamux receive window, Options.StreamWindow. yamux announces the
// whole window at once, with the SYN of a stream this end opens or the ACK
// of one it accepts, not the 256 KiB it starts from; it grants more only as
// the application reads. Unread data waits in a bytes.Buffer that grows by
// doubling and wants 512 bytes free past its data, so a full window costs up
// to twice its size; yamuxWindow trims 512 bytes off the window so that one
// filled in full frames by a peer nobody reads from keeps a buffer of its
// own size (4.2 MiB per stream measured, not 8.1). The control stream has the
// same window; the relay reads it only up to the hello, so a node can park
// one window there per session. Below the streams, each lane's SSH channel
// window (2 MiB, fixed by x/crypto/ssh) bounds what is in flight, and yamux
// drains it into the stream buffers as it arrives.
//
// The relay runs with the default window. The node sizes its own from a
// budget: with at most N streams served at once (more are refused with a
// stream status) and B bytes for their buffers, each window is B/(2N), so N
// full windows fit in B (node.Config.StreamWindow). Over QUIC the windows
// are quic-go's, grown on demand up to 16 MiB per stream and bounded by
// 64 MiB per connection (quic.go).
//
// Splice arms SO_LINGER 0 on its TCP side for as long as data may still
// flow to it, so that the kernel resets the connections of a process that
// dies mid-transfer instead of ending them with a FIN that would pass a
// truncated transfer for a complete one; a clean end restores the default
// linger before its half-close.
//
// References: RFC 4253 (SSH transport), RFC 4254 (connection protocol:
// channels, global requests), hashicorp/yamux spec.md.
package mux
