// Package node is the playnode role: it dials the relay, registers the
// playnode's services, and splices each stream the relay opens to the local
// service it names, for as long as the process runs.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"paradigm/internal/mux"
	"slices"
	"strconv"
	"strings"
	"time"

	"paradigm/internal/proto"
)

// Transports a node can reach the relay with.
const (
	TransportSSH  = "ssh"
	TransportQUIC = "quic"
	TransportAuto = "auto"
)

// Service is one local service the playnode exposes through the relay.
type Service struct {
	Name string
	Addr string // host:port the node dials; only ever this
}

// ParseService parses NAME=[HOST:]PORT, HOST defaulting to 127.0.0.1.
func ParseService(s string) (Service, error) {
	name, target, ok := strings.Cut(s, "=")
	if !ok {
		return Service{}, fmt.Errorf("service %q: want NAME=[HOST:]PORT, e.g. ssh=22", s)
	}
	if err := proto.ValidateName("service", name); err != nil {
		return Service{}, err
	}
	host, port := "127.0.0.1", target
	if strings.Contains(target, ":") {
		var err error
		if host, port, err = net.SplitHostPort(target); err != nil {
			return Service{}, fmt.Errorf("service %q: %v", s, err)
		}
		if host == "" {
			return Service{}, fmt.Errorf("service %q: empty host", s)
		}
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return Service{}, fmt.Errorf("service %q: port %q is not a port number (1-65535)", s, port)
	}
	return Service{Name: name, Addr: net.JoinHostPort(host, port)}, nil
}

// ParseServices parses each of specs with ParseService.
func ParseServices(specs []string) ([]Service, error) {
	out := make([]Service, 0, len(specs))
	for _, s := range specs {
		svc, err := ParseService(s)
		if err != nil {
			return nil, err
		}
		out = append(out, svc)
	}
	return out, nil
}

// Defaults of Config, declared once: cmd/node's flags show them.
const (
	DefaultKeepalive  = mux.DefaultKeepalive
	DefaultBackoffMax = 30 * time.Second
	// DefaultRefusedRetry caps the wait while the relay refuses the node
	// for a reason only its operator can change.
	DefaultRefusedRetry = 2 * time.Minute
	// DefaultPreferFirstAfter is how long a node stays on a relay that is
	// not its first before it checks whether an earlier one is back.
	DefaultPreferFirstAfter = 5 * time.Minute
)

// Config is everything Run needs; cmd/node fills it from flags and the
// config file.
type Config struct {
	// Relay is the relay's HOST:PORT, for a node of one relay; New puts it
	// first in Relays.
	Relay string
	// Relays are the relays' HOST:PORT in order of preference: the node
	// fails over from one to the next and returns to an earlier one after
	// PreferFirstAfter (failover.go). A HOST that resolves to several
	// addresses counts as several relays, resolved again at every attempt.
	Relays []string
	// LookupHost resolves a relay's HOST; default net.DefaultResolver's.
	// It is called for several relays at once.
	LookupHost func(ctx context.Context, host string) ([]string, error)
	// PreferFirstAfter is how long the node stays connected to a relay
	// that is not its first before it probes the earlier ones, and then
	// the least time between two probes; 0 turns that off (the node stays
	// where it is until its session ends). cmd/node's flag defaults to
	// DefaultPreferFirstAfter.
	PreferFirstAfter time.Duration
	// Fingerprint pins the relay's host key ("SHA256:...").
	Fingerprint string
	// Fingerprints pins more host keys, any of which the relay may present
	// (a fleet image carrying the current and the next key).
	Fingerprints []string
	// KnownHosts is an OpenSSH known_hosts file to verify the relay with.
	KnownHosts string
	// TrustOnFirstUse records the relay's key in KnownHosts on the first
	// connection and refuses any other key afterwards.
	TrustOnFirstUse bool
	// KeyFile is the node's private key (OpenSSH format).
	KeyFile string
	// Transport is how the node reaches the relay: TransportSSH over TCP,
	// TransportQUIC over UDP (same address and port number), or
	// TransportAuto: QUIC when it works, SSH when UDP is blocked.
	Transport string
	// Name is the playnode name; the relay binds it to the key. It may be a
	// template (see ExpandName), expanded once by New.
	Name string
	// EnrollToken, when set, is presented to a relay that does not know
	// this node's key yet, to bind it to Name; with it a missing KeyFile is
	// created.
	EnrollToken string
	// MachineIDFile is where a {machine-id} in Name is read; default
	// DefaultMachineIDFile.
	MachineIDFile string
	// RefusedRetry caps the wait between attempts while the relay refuses
	// this node for a reason only its operator can change (unknown key or
	// token, pending approval, name taken, revoked): the wait grows from
	// half a second to it; default 2 minutes.
	RefusedRetry time.Duration
	Services     []Service
	// Keepalive paces liveness checks both ways; a dead link is detected
	// within 2.25 times this (see mux.Options.Keepalive).
	Keepalive time.Duration
	// BackoffMax caps the wait between reconnection attempts.
	BackoffMax time.Duration
	// HandshakeTimeout bounds dialling the relay through the welcome.
	HandshakeTimeout time.Duration
	// DialTimeout bounds connecting to a local service.
	DialTimeout time.Duration
	// MaxStreams bounds the streams served at once; more are refused with
	// proto.StatusRefused. Default DefaultMaxStreams.
	MaxStreams int
	// MaxBuffer bounds, in bytes, the data the relay may send ahead of the
	// services on all streams together: each stream's receive window is
	// MaxBuffer/MaxStreams (see StreamWindow). Default DefaultMaxBuffer.
	MaxBuffer int64
	Logger    *slog.Logger
}

func (c *Config) setDefaults() error {
	if err := c.setRelays(); err != nil {
		return err
	}
	if c.KeyFile == "" {
		return errors.New("no key file given (--key FILE; create one with paradigm-node keygen)")
	}
	name, err := ExpandName(c.Name, NameSources{MachineIDFile: c.MachineIDFile})
	if err != nil {
		return err
	}
	c.Name = name
	if len(c.EnrollToken) > proto.MaxTokenLen {
		return fmt.Errorf("enrollment token of %d bytes, the limit is %d", len(c.EnrollToken), proto.MaxTokenLen)
	}
	if c.RefusedRetry <= 0 {
		c.RefusedRetry = DefaultRefusedRetry
	}
	if len(c.Services) == 0 {
		return errors.New("no service given (--service NAME=[HOST:]PORT)")
	}
	if len(c.Services) > proto.MaxServices {
		return fmt.Errorf("%d services given, the relay accepts at most %d", len(c.Services), proto.MaxServices)
	}
	seen := map[string]bool{}
	for _, s := range c.Services {
		if seen[s.Name] {
			return fmt.Errorf("service %q given twice", s.Name)
		}
		seen[s.Name] = true
	}
	if c.Fingerprint != "" && !slices.Contains(c.Fingerprints, c.Fingerprint) {
		c.Fingerprints = append(c.Fingerprints, c.Fingerprint)
	}
	if c.Fingerprint == "" && len(c.Fingerprints) > 0 {
		c.Fingerprint = c.Fingerprints[0]
	}
	if c.Fingerprint == "" && c.KnownHosts == "" {
		return errors.New("no way to verify the relay's host key: give --fingerprint SHA256:..., or --known-hosts FILE (with --trust-on-first-use to record the key seen first)")
	}
	if c.TrustOnFirstUse && c.KnownHosts == "" {
		return errors.New("--trust-on-first-use needs --known-hosts FILE to record the relay's key in")
	}
	for _, fp := range c.Fingerprints {
		if !strings.HasPrefix(fp, "SHA256:") {
			return fmt.Errorf("fingerprint %q: want the SHA256:... form that paradigm-relay fingerprint prints", fp)
		}
	}
	switch c.Transport {
	case "":
		c.Transport = TransportSSH
	case TransportSSH, TransportQUIC, TransportAuto:
	default:
		return fmt.Errorf("transport %q: want ssh, quic or auto", c.Transport)
	}
	if c.Keepalive <= 0 {
		c.Keepalive = DefaultKeepalive
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = DefaultBackoffMax
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = mux.DefaultHandshakeTimeout
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c.setLimits()
}

// setRelays puts Relay first in Relays and checks every address.
func (c *Config) setRelays() error {
	if c.Relay != "" && !slices.Contains(c.Relays, c.Relay) {
		c.Relays = append([]string{c.Relay}, c.Relays...)
	}
	if len(c.Relays) == 0 {
		return errors.New("no relay address given (--relay HOST:PORT)")
	}
	if len(c.Relays) > MaxRelays {
		return fmt.Errorf("%d relays given, at most %d are tried", len(c.Relays), MaxRelays)
	}
	seen := map[string]bool{}
	for _, r := range c.Relays {
		host, _, err := net.SplitHostPort(r)
		if err != nil {
			return fmt.Errorf("relay address %q: %v", r, err)
		}
		if host == "" {
			return fmt.Errorf("relay address %q: empty host", r)
		}
		if seen[r] {
			return fmt.Errorf("relay %q given twice", r)
		}
		seen[r] = true
	}
	c.Relay = c.Relays[0]
	if c.LookupHost == nil {
		c.LookupHost = net.DefaultResolver.LookupHost
	}
	if c.PreferFirstAfter < 0 {
		return fmt.Errorf("prefer-first-after %v: want 0 (off) or more", c.PreferFirstAfter)
	}
	return nil
}
