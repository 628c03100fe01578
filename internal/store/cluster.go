package store

import (
	"context"
	"time"
)

// Cluster is what several relays sharing one store know of each other
// besides the assignments: which relays are up (members) and where each
// online playnode is at home (the relay holding its newest session). A
// Store that several relays can share implements it too; the relay finds
// it with a type assertion, so the flat file, which one relay owns, does
// not.
//
// Members and homes live only as long as their relay keeps its lease: a
// relay that dies, or loses the store for longer than the lease, loses
// them when the lease ends, and the other relays see its playnodes go.
type Cluster interface {
	// Join registers self under a lease of about ttl and keeps it alive
	// until ctx is done. It reports Joined once it holds the lease, then
	// the current members and homes (a ClusterChange with Reset set), then
	// every change, in order, until ctx is done; then it returns nil.
	// While the store is unreachable it retries; when it could not renew
	// the lease in time it reports LeaseLost, and once the store answers
	// again, Joined again: claims made before may be gone and must be made
	// again. Calls to fn are sequential; fn must not block on the store.
	Join(ctx context.Context, self Member, ttl time.Duration, fn func(ClusterChange)) error
	// Claim records h as playnode's home under this relay's lease, unless
	// a newer session (a later Since) is at home elsewhere: then it returns
	// that home and false. It fails before Join has a lease.
	Claim(ctx context.Context, playnode string, h Home) (Home, bool, error)
	// Release removes playnode's home if it is still h.
	Release(ctx context.Context, playnode string, h Home) error
}

// Member is one relay of a cluster, as it registered itself.
type Member struct {
	// ID names the relay in the cluster: its advertised address, unique.
	ID string `json:"id"`
	// Addr is where the other relays dial it (its playnode port).
	Addr string `json:"addr"`
	// HostKey is its SSH host key, in authorized-keys form: the other
	// relays verify it when they dial, and accept it when it dials them.
	HostKey string `json:"host_key"`
}

// Home is where a playnode is online: one session on one relay.
type Home struct {
	Relay   string    `json:"relay"`   // the Member.ID holding the session
	Session string    `json:"session"` // unique per session
	Since   time.Time `json:"since"`   // when the session started, on that relay's clock
	// What the relay knows of the session, for the other relays' views.
	Transport   string   `json:"transport,omitempty"`
	Remote      string   `json:"remote,omitempty"`
	Fingerprint string   `json:"key_fingerprint,omitempty"`
	Client      string   `json:"client_version,omitempty"`
	Services    []string `json:"services,omitempty"` // registered by its hello
}

// Newer reports whether h is a newer session than o: started later, the
// session id breaking a tie so that every relay agrees.
func (h Home) Newer(o Home) bool {
	if !h.Since.Equal(o.Since) {
		return h.Since.After(o.Since)
	}
	return h.Session > o.Session
}

// ClusterChange is one change that Join reports. Exactly one of its parts
// is set.
type ClusterChange struct {
	// Reset: these are all the members and homes there are now (when Join
	// starts, and after it lost track: a broken watch, compaction).
	Reset *ClusterState
	// LeaseLost: this relay's lease could not be renewed in time; the
	// other relays may already see its playnodes as gone.
	LeaseLost bool
	// Joined: this relay holds a lease (at the start, or again after
	// LeaseLost); claims made before must be made again.
	Joined bool
	// Member is a relay that joined (or changed); MemberGone one that left.
	Member     *Member
	MemberGone string
	// Playnode's home is now Home, or none when Home is nil.
	Playnode string
	Home     *Home
}

// ClusterState is the whole of a cluster at one moment.
type ClusterState struct {
	Members []Member
	Homes   map[string]Home // by playnode
}
