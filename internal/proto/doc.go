// Package proto is the wire protocol between a playnode and the relay: the
// control messages and their framing, and the header and status that open
// every forwarded stream. It is the single source of truth for the wire; the
// same bytes run over every transport.
//
// # Protocol flow
//
//	playnode                                relay
//	   |---- SSH channel, yamux session ------>|  (QUIC: native streams instead)
//	   |---- opens stream 1 (control) -------->|
//	   |---- Hello{version, playnode, -------->|  relay checks the key owns the
//	   |           services}                   |  name and validates the services
//	   |<--- Welcome{portaliases} -------------|  or Refuse{code, reason}, then close
//	   |                                       |
//	   |      for each TCP connection a client makes to a portalias:
//	   |<--- opens stream N, stream header ----|  version | nameLen | service
//	   |  node looks the service up in its OWN config, dials it
//	   |---- status (+ reason if not OK) ----->|
//	   |<=== raw bytes both ways, half-close =>|
//	   |                                       |
//	   |<--- Welcome (assignments changed) ----|  any time on the control stream
//	   |<--- Refuse (replaced, revoked, -------|  then the relay closes
//	   |            shutdown)                  |
//
// Over SSH, the node opens the first paradigm-mux@v1 channel, the control
// stream's lane; the relay may open more channels (lanes, each its own yamux
// session) and puts each forwarded stream on one of them (internal/mux).
// Over QUIC every stream is a native QUIC stream. The bytes above are the
// same on every transport.
//
// The stream header only names a service, never an address: what a playnode
// dials is decided by the playnode alone, so a compromised relay cannot turn
// a device into a proxy for arbitrary hosts.
//
// # Control frames
//
// Frames on the control stream:
//
//	type    (1 byte)  TypeHello=1, TypeWelcome=2, TypeRefuse=3, TypeEnroll=4, TypeHostKeys=5
//	length  (4 bytes) uint32 big-endian, length of payload, at most MaxMessageSize
//	payload (length bytes) JSON of Hello, Welcome, Refuse, Enroll or HostKeys
//
// # Enrollment
//
// A node that holds an enrollment token (and maybe a key the relay has never
// seen) authenticates as user NAME+enroll (EnrollUserSuffix; over QUIC the
// certificate's CommonName). A relay that does not know the key accepts it
// for that user only, and only to read an Enroll; without the suffix an
// unknown key is refused during authentication, as before. The token travels
// inside the encrypted channel, after the node has checked the relay's host
// key.
//
//	playnode                                relay
//	   |---- SSH/QUIC, user NAME+enroll ------>|  unknown key: "enrolling"
//	   |---- opens stream 1 (control) -------->|
//	   |---- Enroll{version, playnode, token} >|  token hash compared in constant
//	   |---- Hello{...} ---------------------->|  time; key bound to the name
//	   |<--- Welcome{portaliases} -------------|  then the session goes on as any
//	   |<--- or Refuse{token | name-taken | ---|  other; a known key's Enroll is
//	   |        pending | rejected | rate}     |  ignored
//
// The Enroll is a message only a node that asked for enrollment (by its user
// name) sends, so TypeEnroll=4 extends version 1 rather than changing it: an
// older relay never accepts such a node's unknown key in the first place.
//
// # Relay host key rotation
//
// A node that sets Hello.HostKeys takes HostKeys{next} on the control
// stream, after its Welcome and whenever the relay's next host key changes.
// It records the keys in a known_hosts file beside its own key and trusts
// them besides its pinned fingerprints, so that the operator can promote the
// next key without losing a device. A relay sends HostKeys to no other node.
//
//	playnode                                relay
//	   |---- Hello{..., host_keys: true} ---->|
//	   |<--- Welcome{portaliases} ------------|
//	   |<--- HostKeys{next: [ssh-ed25519 ..]} |  also later: hostkey next
//
// The length is checked before the payload is allocated. Unknown JSON fields
// are ignored, so a field may be added without breaking older peers; an
// unknown frame type is an error.
//
// # Forwarded streams
//
// Stream header, relay to playnode, the first bytes of each forwarded stream:
//
//	version (1 byte)  StreamVersion
//	nameLen (1 byte)  1..MaxNameLen
//	name    (nameLen bytes) service name, see ValidateName
//
// Stream status, playnode to relay, the first bytes back, before any data:
//
//	status    (1 byte)  StatusOK=0, StatusUnknownService=1, StatusDialFailed=2, StatusRefused=3
//	reasonLen (1 byte)  only if status != StatusOK
//	reason    (reasonLen bytes) UTF-8, truncated to 255 bytes
//
// After StatusOK bytes are copied raw in both directions.
//
// # Versioning
//
// Any change to the bytes above (a frame layout, a type or status number, a
// field's meaning) bumps Version, or StreamVersion for the stream header. A
// new optional JSON field does not, nor a new message type sent only to a
// peer that asked for it (TypeEnroll, by its user name; TypeHostKeys, by
// Hello.HostKeys).
package proto
