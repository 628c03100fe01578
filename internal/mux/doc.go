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
//	(a second stream from the node: the relay hangs up, MaxPeerStreams;
//	 so it does past 256 KiB on the control stream, MaxPeerBytes)
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
// same window, and the relay reads it only up to the hello, so the relay
// bounds instead what a node sends there over the session's life
// (MaxPeerBytes, 256 KiB; sshgate.go). A stream the node opens and the
// relay never accepts would wait in yamux's accept backlog with 256 KiB of data for the
// session's life, 128 of them per lane: the relay's MaxPeerStreams (1, the
// control stream) ends the session at the first frame of one (sshgate.go). Below the streams, each lane's SSH channel
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
// # Responsive under load
//
// A playnode's API must answer in milliseconds while the same playnode
// moves bulk data through its tunnel over a slow link. Over SSH every
// stream of a session shares one TCP connection, and a small stream's frame
// waits for every byte queued ahead of it. The bytes can queue in four
// places; each is bounded:
//
//   - The kernel's send buffer. Linux autotunes it to megabytes: seconds at
//     20 Mbit/s. The pacer (sshpace.go) times how long each write to the
//     socket waits for the socket to take its bytes (from EAGAIN until it
//     is writable: not write(2)'s own CPU time, which on a busy CPU made
//     a loopback link look slow); when the socket sets the pace (writes
//     spend more than a tenth of the time blocked) it sets
//     TCP_NOTSENT_LOWAT to about 2 ms of the measured rate, and holds
//     large writes back while the socket has more unacknowledged bytes
//     (SIOCOUTQ) than twice the path's bandwidth-delay product plus those
//     2 ms (TCP_INFO's minimum RTT), so that the connection's own
//     congestion control does not fill the router's queue with tunnel
//     data either. The bound's rate is the larger of the
//     pacer's (measured over 100 ms) and the median of the last nine
//     delivery rates TCP_INFO reported, never one of them alone: that is
//     one ACK's sample, and for a moment after the link idled it read up to
//     18 times a 50 Mbit/s downlink's rate; the gate let 100 KB through at
//     once, and 1 % of requests waited 20 ms behind it. The hold happens in
//     the lane's frameWriter, before the packet reaches x/crypto/ssh and
//     its transport mutex, so a small frame of another lane goes out while
//     a bulk packet waits (holding it inside the socket write, under the
//     mutex, made every request wait out the gate too: 10 ms at p50 on a
//     full 20 Mbit/s uplink, 6 ms after the move). Writes below 4 KiB
//     (requests, replies, window adjusts, stream opens) never wait at that
//     gate.
//   - The SSH packet being written. x/crypto/ssh writes one packet at a time
//     under one mutex, and a packet holds it until the kernel took all of
//     it; so on a slow link frameWriter cuts bulk frames into packets of
//     about 2 ms of the rate (4 KiB at 20 Mbit/s) instead of 32 KiB. Go's
//     mutex hands over in FIFO order to a writer that waited over 1 ms, so
//     a small stream waits for about one such packet.
//   - yamux's send queue of a lane: first come first served, at most one
//     frame (up to a 32 KiB splice buffer) per stream. New streams go to
//     the lane with the fewest streams and, of those, to any lane before
//     lane 0 (the control stream's) and then to the one that carried the
//     fewest bytes (pickLane), so that they do not share a lane with a
//     bulk transfer, nor the control stream with one, while another lane
//     is free.
//   - The SSH channel and yamux stream windows bound what a bulk stream
//     may have in flight, not what waits ahead of others: with the kernel
//     buffer bounded, bytes beyond it wait in the writing goroutine.
//
// On a fast link (loopback, LAN) the pacer keeps the maximum sizes (32 KiB
// packets, 128 KiB TCP_NOTSENT_LOWAT, and past 64 MB/s the kernel's own
// unsent limit) and never gates: it costs one monotonic clock reading
// per socket write, and two per wait for the socket; loopback bulk, both
// directions, 1 and 8 streams, runs within 3 % of the code before the
// pacer (bench/README.md, session 11). Over QUIC streams are independent
// and quic-go schedules them round robin; what remains there is the
// congestion controller's queue in the router, which is the link's.
//
// References: RFC 4253 (SSH transport), RFC 4254 (connection protocol:
// channels, global requests), hashicorp/yamux spec.md.
package mux
