// Package mux is the transport layer between a playnode and the relay: one
// authenticated Session per node, carrying many Streams.
//
// # SSH transport flow
//
//	node (client)                                relay (server)
//	TCP connect ---------------------------------> accept
//	"SSH-2.0-..." version, KEX, ed25519 host key   (first 4 bytes must be "SSH-")
//	publickey auth (node key) --------------------> Authorize(remote, user, key) -> playnode
//	open channel "paradigm-mux@v1" ---------------> accept (exactly one; anything else: Prohibited)
//	yamux client  <======= yamux over channel =====> yamux server
//	OpenStream: control stream -------------------> AcceptStream
//	AcceptStream <--------------------------------- OpenStream: one per forwarded TCP connection
//
// The handshake, authentication and channel open run under one deadline
// (HandshakeTimeout). Global requests are refused, except
// keepalive@openssh.com, which is answered. Liveness is a watchdog on the
// bytes received, with keepalive requests in both directions when the link
// is quiet, see [Options.Keepalive] and liveness.go.
//
// The SSH channel and the yamux session live and die together: when yamux
// gives up (keepalive, protocol error, Close) the SSH connection and its TCP
// connection are closed; when the SSH connection ends, yamux ends.
//
// References: RFC 4253 (SSH transport), RFC 4254 (connection protocol:
// channels, global requests), hashicorp/yamux spec.md.
package mux
