// Package relay is the server role: it authenticates playnodes, keeps every
// portalias bound on the server, and splices each connection to a portalias
// into a stream to the playnode that owns it.
//
// # Architecture
//
//	          playnodes (SSH :4422, QUIC :4422/udp)          portalias clients (127.0.0.1:20000-29999)
//	                    |                                                  |
//	accept.go  acceptNodes / acceptQUIC: admission          portalias.go  servePortalias: accept,
//	           (per address, handshake slots), auth                       route (registry), admit (limits.go)
//	                    |                                                  |
//	session.go serveSession: hello -> assign -> up -> welcome  forward.go  open stream, header, count,
//	           control sender (on demand), downReason                    mux.Splice (internal/mux/splice.go)
//	                    |                                                  |
//	assign.go  assign (reserve ports, store.Update, apply),  <------ registry.go: THE live state
//	           apply (diff -> events, bind/close listeners)        sessions, playnode records, counters,
//	                    |                                          table, listeners, bind failures
//	store.Store (internal/store): Load, Update, Watch               |
//	                                                                v  events (events.go), in order
//	watch.go   authorized_nodes reload -> revocations        subscribers: logevents.go (the log),
//	           retry of unbound portaliases                  status.go (status.json), Subscribe callers
//	                                                         snapshot.go: Snapshot (read-only copy)
//
// The forwarding path on this side is three files: portalias.go (accept and
// admit), forward.go (open the stream, header, status) and mux's splice.go.
//
// In a cluster (a store that implements store.Cluster, i.e. etcd):
// cluster.go joins it (membership under a lease), applies what the other
// relays report (members; each playnode's home, i.e. which relay holds its
// newest session) to the registry, and writes this relay's own homes in
// the background (presence: claims when a session starts, releases when it
// ends, retried while the store is unreachable). mesh.go forwards a
// connection to a playnode at home elsewhere one hop, over an SSH link to
// its home relay; the home relay forwards a mesh stream only to its own
// sessions.
//
// Around the core: enroll.go (a node with an enrollment token: tokens.go
// holds the token file, pending.go the approval list), lifecycle.go (nodes,
// revoke), hostkey.go (the next host key, announced to nodes), operator.go
// and list.go (the operator's commands on a data folder), admin_api.go (what
// the admin endpoint, internal/admin, calls). internal/admin subscribes
// twice more: its event ring (SSE) and its webhook sender.
//
// # Who owns what
//
//   - registry owns the live state: which session serves each playnode,
//     what is known of every playnode (last session, counters), the
//     assignment table as last applied, the portalias listeners, the
//     authorized keys. Every change goes through its methods, which queue
//     Events; they are published after its lock is released, in order.
//   - Relay.applyMu serialises committing assignments to the store with
//     applying them, so tables are applied in commit order.
//   - nodeSession owns its control stream's writes: one sender goroutine,
//     started when something is queued (a Welcome, a Refuse), so no lock is
//     held across a network write and an idle playnode has no goroutine.
//   - The store owns the assignments at rest; Watch reports every commit,
//     ours included (apply is idempotent).
//   - The registry also owns the cluster view: members (by id and host
//     key) and each remote playnode's home. Only Join's goroutine changes
//     it (clusterChanged); presence owns the queue of claims and releases
//     and their writer; mesh owns the links to the other relays.
//   - Relay.wg owns every goroutine the relay starts (accept loops,
//     portalias listeners, forwarded connections, control senders, watchers)
//     and every live session until its end is recorded; subWG owns the event
//     subscribers, which end when the bus closes after wg.
//
// # Lock order
//
//	Relay.applyMu -> registry.mu -> eventBus.mu
//	registry.pubMu -> registry.mu -> eventBus.mu
//	Relay.authMu -> registry.mu
//
// File locks, taken in this order when more than one is needed (enrollment):
// the token file, the pending list, authorized_nodes.
//
// presence.mu and mesh.mu are leaves: they guard their maps only; claims,
// dials and closes happen outside them.
//
// registry.mu and eventBus.mu guard memory only: nothing under them blocks
// on the network, a file or a channel. nodeSession.ctrlMu, streamLimit and
// unauthCounter are leaves. No network write happens under any lock.
package relay
