package relay

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"paradigm/internal/mux"
	"paradigm/internal/store"
)

// Files inside the data folder besides AuthorizedFile and the host key.
const (
	HostKeyFile    = "host_key"
	PortaliasFile  = "portaliases"
	StatusFile     = "status.json"
	LockFile       = "relay.lock"
	DefaultDataDir = "/var/lib/paradigm-relay"
	DefaultListen  = ":4422"
	DefaultBind    = "127.0.0.1"
	DefaultLowPort = 20000
	DefaultHiPort  = 29999

	DefaultMaxUnauthPerAddress    = 16
	DefaultMaxStreamsPerNode      = 1024
	DefaultMaxStreamsPerPortalias = 256
	DefaultMaxHandshakes          = 128
	DefaultMaxPortaliasesPerNode  = 64
	DefaultPeerLogLines           = 10
	DefaultFirstBytesTimeout      = 5 * time.Second
	DefaultKeepalive              = mux.DefaultKeepalive
	DefaultHandshakeTimeout       = mux.DefaultHandshakeTimeout
	DefaultReloadInterval         = 2 * time.Second
	DefaultStreamOpenTimeout      = 10 * time.Second
)

// Config is everything Run needs; internal/relaycli fills it from the flags
// of paradigm-relay serve.
type Config struct {
	DataDir string
	// Listen is the one TCP address playnodes dial (SSH).
	Listen string
	// QUICListen, when set, is the UDP address playnodes may dial with QUIC
	// instead (same keys, same behaviour). Off when empty.
	QUICListen string
	// PortLow and PortHigh bound the portaliases the relay assigns.
	PortLow, PortHigh uint16
	// Bind is the address portaliases listen on: loopback unless the
	// operator deliberately exposes them.
	Bind string
	// Keepalive paces liveness checks both ways; a dead link is detected
	// within 2.25 times this (see mux.Options.Keepalive).
	Keepalive time.Duration
	// HandshakeTimeout bounds SSH handshake, authentication and hello.
	HandshakeTimeout time.Duration
	// FirstBytesTimeout bounds the wait for an SSH connection's first
	// bytes (its version line) before it may take a handshake slot.
	// Default 5s.
	FirstBytesTimeout time.Duration
	// MaxHandshakes bounds handshakes in progress at once, so a storm of
	// reconnecting playnodes (or a scanner) cannot starve live sessions.
	MaxHandshakes int
	// MaxUnauthPerAddress bounds the connections from one source address
	// that have not authenticated yet, so that one scanner or attacker
	// cannot hold every MaxHandshakes slot; excess connections are closed
	// at once. Playnodes behind one NAT share an address: after a relay
	// restart the excess of them retry after their backoff. Default 16.
	MaxUnauthPerAddress int
	// MaxStreamsPerNode bounds the connections forwarded to one playnode at
	// once, over all its portaliases; excess connections are closed at
	// once. Default 1024.
	MaxStreamsPerNode int
	// MaxStreamsPerPortalias bounds the connections forwarded through one
	// portalias at once. Default 256.
	MaxStreamsPerPortalias int
	// PeerLogLines bounds the log lines that peers cause (refused and
	// failed connections, unknown keys, unavailable services) to this many
	// per reason and minute; the rest are counted and summarised once a
	// minute. Default 10.
	PeerLogLines int
	// MaxPortaliasesPerNode bounds the portaliases one playnode may hold
	// in the store, and the new ones it may be given per hour, so that one
	// key (a stolen one included) can take at most its share of the port
	// range. Default 64, the services one hello may carry.
	MaxPortaliasesPerNode int
	// ReloadInterval is how often the relay looks for changes to the
	// authorized-nodes and portalias files and retries unbound portaliases.
	ReloadInterval time.Duration
	// StreamOpenTimeout bounds opening a stream to the playnode for a new
	// connection to a portalias.
	StreamOpenTimeout time.Duration
	// EnrollPerMinute bounds the enrollment attempts of one source address:
	// a burst of this many, then this many a minute. Default
	// DefaultEnrollPerMinute.
	EnrollPerMinute int
	// MaxPending bounds the pending list (enrollments waiting for approval,
	// rejected keys); default DefaultMaxPending.
	MaxPending int
	// Store holds the portalias assignments; nil means the flat file
	// DataDir/portaliases, checked for edits every ReloadInterval. A store
	// that implements store.Cluster (etcd) makes the relay one of a
	// cluster (cluster.go, mesh.go).
	Store store.Store
	// Docs holds the authorized playnodes, the enrollment tokens and the
	// pending list (see Site); nil means the flat files in DataDir, the
	// authorized nodes checked for edits every ReloadInterval, at least
	// four times a second.
	Docs store.Docs
	// Advertise is the address the other relays of a cluster dial to
	// reach this one (its Listen port, at an address they can reach); it
	// also names this relay in the cluster. Default: Listen, when that
	// names a host. Unused without a cluster.
	Advertise string
	Logger    *slog.Logger
}

// setDefaults fills zero fields and validates the rest once.
func (c *Config) setDefaults() error {
	if c.DataDir == "" {
		return errors.New("no data folder given (--data)")
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.PortLow == 0 && c.PortHigh == 0 {
		c.PortLow, c.PortHigh = DefaultLowPort, DefaultHiPort
	}
	if c.PortLow == 0 || c.PortLow > c.PortHigh {
		return fmt.Errorf("port range %d-%d is empty or starts at 0", c.PortLow, c.PortHigh)
	}
	if c.Bind == "" {
		c.Bind = DefaultBind
	}
	if _, err := netip.ParseAddr(c.Bind); err != nil {
		return fmt.Errorf("bind address %q is not an IP address", c.Bind)
	}
	if c.Keepalive <= 0 {
		c.Keepalive = DefaultKeepalive
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.FirstBytesTimeout <= 0 {
		c.FirstBytesTimeout = min(DefaultFirstBytesTimeout, c.HandshakeTimeout)
	}
	if c.MaxHandshakes <= 0 {
		c.MaxHandshakes = DefaultMaxHandshakes
	}
	if c.MaxUnauthPerAddress <= 0 {
		c.MaxUnauthPerAddress = DefaultMaxUnauthPerAddress
	}
	if c.MaxStreamsPerNode <= 0 {
		c.MaxStreamsPerNode = DefaultMaxStreamsPerNode
	}
	if c.MaxStreamsPerPortalias <= 0 {
		c.MaxStreamsPerPortalias = DefaultMaxStreamsPerPortalias
	}
	if c.PeerLogLines <= 0 {
		c.PeerLogLines = DefaultPeerLogLines
	}
	if c.MaxPortaliasesPerNode <= 0 {
		c.MaxPortaliasesPerNode = DefaultMaxPortaliasesPerNode
	}
	if c.MaxPending <= 0 {
		c.MaxPending = DefaultMaxPending
	}
	if c.EnrollPerMinute <= 0 {
		c.EnrollPerMinute = DefaultEnrollPerMinute
	}
	if c.ReloadInterval <= 0 {
		c.ReloadInterval = DefaultReloadInterval
	}
	if c.StreamOpenTimeout <= 0 {
		c.StreamOpenTimeout = DefaultStreamOpenTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if _, ok := c.Store.(store.Cluster); ok {
		if c.Advertise == "" {
			// Listen's resolved address, once it is bound (load).
			host, _, err := net.SplitHostPort(c.Listen)
			if ip, perr := netip.ParseAddr(host); err != nil || host == "" || perr == nil && ip.IsUnspecified() {
				return fmt.Errorf("listen address %q names no host: give --advertise HOST:PORT, where the other relays of the cluster reach this one", c.Listen)
			}
		} else if _, _, err := net.SplitHostPort(c.Advertise); err != nil {
			return fmt.Errorf("advertise address %q: want HOST:PORT: %v", c.Advertise, err)
		}
	}
	return nil
}

// ParsePortRange parses "LOW-HIGH" as --ports takes it.
func ParsePortRange(s string) (low, high uint16, err error) {
	var l, h int
	if n, _ := fmt.Sscanf(s, "%d-%d", &l, &h); n != 2 || fmt.Sprintf("%d-%d", l, h) != s {
		return 0, 0, fmt.Errorf("port range %q: want LOW-HIGH, e.g. 20000-29999", s)
	}
	if l < 1 || h > 65535 || l > h {
		return 0, 0, fmt.Errorf("port range %q: want 1 <= LOW <= HIGH <= 65535", s)
	}
	return uint16(l), uint16(h), nil
}

// isLoopback reports whether addr only listens on this machine.
func isLoopback(addr string) bool {
	ip, err := netip.ParseAddr(addr)
	return err == nil && ip.IsLoopback()
}

func bindAddr(bind string, port uint16) string {
	return net.JoinHostPort(bind, fmt.Sprint(port))
}
