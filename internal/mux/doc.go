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
// References: RFC 4253 (SSH transport), RFC 4254 (connection protocol:
// channels, global requests), hashicorp/yamux spec.md.
package mux
