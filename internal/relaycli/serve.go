package relaycli

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"paradigm/internal/admin"
	"paradigm/internal/cliflags"
	"paradigm/internal/demo"
	"paradigm/internal/relay"
)

// defaultPorts is --ports' default, relay's portalias range.
var defaultPorts = fmt.Sprintf("%d-%d", relay.DefaultLowPort, relay.DefaultHiPort)

// Serve is `paradigm-relay serve`.
func Serve() *cli.Command {
	var f serveFlags
	return &cli.Command{
		Name:  "serve",
		Usage: "run the relay",
		Flags: f.flags(),
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return fmt.Errorf("serve takes no arguments, got %q", c.Args().Slice())
			}
			log, err := cliflags.New(c, os.Stderr)
			if err != nil {
				return err
			}
			if err := cliflags.SetProcs(c, "procs"); err != nil {
				return err
			}
			rc, ac, err := f.configs(c)
			if err != nil {
				return err
			}
			rc.Logger, ac.Logger = log, log
			r, err := relay.New(rc)
			if err != nil {
				return err
			}
			return admin.Serve(c.Context, r, ac)
		},
	}
}

// serveFlags holds what serve's flags fill: each flag that maps to one
// field of relay.Config or admin.Config fills it directly (Destination),
// so that a flag is named, documented and defaulted in one line.
type serveFlags struct {
	relay relay.Config
	admin admin.Config
	ports string
}

func (f *serveFlags) flags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "listen", Destination: &f.relay.Listen, Value: relay.DefaultListen, Usage: "address playnodes dial (SSH)", EnvVars: []string{"PARADIGM_RELAY_LISTEN"}},
		&cli.StringFlag{Name: "advertise", Destination: &f.relay.Advertise, DefaultText: "--listen, when it names a host", Usage: "with a shared --store: HOST:PORT where the other relays of the cluster reach this one's --listen port; it also names this relay in the cluster", EnvVars: []string{"PARADIGM_RELAY_ADVERTISE"}},
		&cli.StringFlag{Name: "quic-listen", Destination: &f.relay.QUICListen, Usage: "also serve playnodes over QUIC on this UDP address (e.g. :4422, the same port number as --listen); off when empty", EnvVars: []string{"PARADIGM_RELAY_QUIC_LISTEN"}},
		&cli.StringFlag{Name: "ports", Destination: &f.ports, Value: defaultPorts, Usage: "range portaliases are assigned from", EnvVars: []string{"PARADIGM_RELAY_PORTS"}},
		&cli.StringFlag{Name: "bind", Destination: &f.relay.Bind, Value: relay.DefaultBind, Usage: "address portaliases listen on; anything but loopback exposes every playnode's services to the network", EnvVars: []string{"PARADIGM_RELAY_BIND"}},
		&cli.DurationFlag{Name: "keepalive", Destination: &f.relay.Keepalive, Value: relay.DefaultKeepalive, Usage: "liveness check interval both ways; a dead link is detected within 2.25 times this", EnvVars: []string{"PARADIGM_RELAY_KEEPALIVE"}},
		&cli.DurationFlag{Name: "handshake-timeout", Destination: &f.relay.HandshakeTimeout, Value: relay.DefaultHandshakeTimeout, Usage: "bound on SSH handshake, authentication and hello", EnvVars: []string{"PARADIGM_RELAY_HANDSHAKE_TIMEOUT"}},
		&cli.DurationFlag{Name: "first-bytes-timeout", Destination: &f.relay.FirstBytesTimeout, Value: relay.DefaultFirstBytesTimeout, Usage: "wait for a playnode connection's SSH version line before it may take a handshake slot", EnvVars: []string{"PARADIGM_RELAY_FIRST_BYTES_TIMEOUT"}},
		&cli.IntFlag{Name: "max-handshakes", Destination: &f.relay.MaxHandshakes, Value: relay.DefaultMaxHandshakes, Usage: "handshakes in progress at once", EnvVars: []string{"PARADIGM_RELAY_MAX_HANDSHAKES"}},
		&cli.IntFlag{Name: "max-unauth-per-address", Destination: &f.relay.MaxUnauthPerAddress, Value: relay.DefaultMaxUnauthPerAddress, Usage: "connections from one source address that have not authenticated yet; more are closed at once", EnvVars: []string{"PARADIGM_RELAY_MAX_UNAUTH_PER_ADDRESS"}},
		&cli.IntFlag{Name: "max-streams-per-node", Destination: &f.relay.MaxStreamsPerNode, Value: relay.DefaultMaxStreamsPerNode, Usage: "connections forwarded to one playnode at once; more are closed at once", EnvVars: []string{"PARADIGM_RELAY_MAX_STREAMS_PER_NODE"}},
		&cli.IntFlag{Name: "max-streams-per-portalias", Destination: &f.relay.MaxStreamsPerPortalias, Value: relay.DefaultMaxStreamsPerPortalias, Usage: "connections forwarded through one portalias at once; more are closed at once", EnvVars: []string{"PARADIGM_RELAY_MAX_STREAMS_PER_PORTALIAS"}},
		&cli.IntFlag{Name: "peer-log-lines", Destination: &f.relay.PeerLogLines, Value: relay.DefaultPeerLogLines, Usage: "log lines peers may cause per reason and minute (refused connections, unknown keys); the rest are counted and summarised", EnvVars: []string{"PARADIGM_RELAY_PEER_LOG_LINES"}},
		&cli.IntFlag{Name: "max-portaliases-per-node", Destination: &f.relay.MaxPortaliasesPerNode, Value: relay.DefaultMaxPortaliasesPerNode, Usage: "portaliases one playnode may hold, and new ones it may get per hour", EnvVars: []string{"PARADIGM_RELAY_MAX_PORTALIASES_PER_NODE"}},
		&cli.DurationFlag{Name: "reload-interval", Destination: &f.relay.ReloadInterval, Value: relay.DefaultReloadInterval, Usage: "how often edits to authorized_nodes and portaliases are picked up", EnvVars: []string{"PARADIGM_RELAY_RELOAD_INTERVAL"}},
		&cli.IntFlag{Name: "max-pending", Destination: &f.relay.MaxPending, Value: relay.DefaultMaxPending, Usage: "enrollments waiting for approval and rejected keys kept at once; more enrollments that need approval are refused", EnvVars: []string{"PARADIGM_RELAY_MAX_PENDING"}},
		&cli.IntFlag{Name: "enroll-per-minute", Destination: &f.relay.EnrollPerMinute, Value: relay.DefaultEnrollPerMinute, Usage: "enrollment attempts one source address may make at once and per minute", EnvVars: []string{"PARADIGM_RELAY_ENROLL_PER_MINUTE"}},
		&cli.IntFlag{Name: "procs", Value: 0, DefaultText: "0: all CPUs", Usage: "CPUs running the relay's Go code at once (GOMAXPROCS), 0 for all", EnvVars: []string{"PARADIGM_RELAY_PROCS"}},
		&cli.StringFlag{Name: "admin", Destination: &f.admin.Listen, Value: admin.DefaultListen, Usage: "address of the admin endpoint (JSON API, events, metrics, status page); \"\" turns it off; anything but loopback needs --admin-token-file", EnvVars: []string{"PARADIGM_RELAY_ADMIN"}},
		adminTokenFlag(&f.admin.TokenFile),
		&cli.StringFlag{Name: "admin-tls-cert", Destination: &f.admin.TLSCert, Usage: "serve the admin endpoint over HTTPS with this certificate (PEM)", EnvVars: []string{"PARADIGM_RELAY_ADMIN_TLS_CERT"}},
		&cli.StringFlag{Name: "admin-tls-key", Destination: &f.admin.TLSKey, Usage: "the key of --admin-tls-cert (PEM)", EnvVars: []string{"PARADIGM_RELAY_ADMIN_TLS_KEY"}},
		&cli.IntFlag{Name: "admin-max-conns", Destination: &f.admin.MaxConns, Value: admin.DefaultMaxConns, Usage: "connections to the admin endpoint open at once; more wait until one closes", EnvVars: []string{"PARADIGM_RELAY_ADMIN_MAX_CONNS"}},
		&cli.IntFlag{Name: "admin-max-sse-clients", Destination: &f.admin.MaxSSEClients, Value: admin.DefaultMaxSSEClients, Usage: "event streams (/api/v1/events, status pages) served at once", EnvVars: []string{"PARADIGM_RELAY_ADMIN_MAX_SSE_CLIENTS"}},
		&cli.IntFlag{Name: "admin-event-ring", Destination: &f.admin.EventRing, Value: admin.DefaultEventRing, Usage: "recent events kept for event streams that reconnect (Last-Event-ID)", EnvVars: []string{"PARADIGM_RELAY_ADMIN_EVENT_RING"}},
		&cli.StringSliceFlag{Name: "webhook", Usage: "POST every event as signed JSON to this URL (repeatable)", EnvVars: []string{"PARADIGM_RELAY_WEBHOOK"}},
		&cli.StringFlag{Name: "webhook-secret", Destination: &f.admin.WebhookSecretFile, Usage: "file holding the HMAC-SHA256 key webhook deliveries are signed with (required with --webhook)", EnvVars: []string{"PARADIGM_RELAY_WEBHOOK_SECRET"}},
		&cli.DurationFlag{Name: "webhook-grace", Destination: &f.admin.WebhookGrace, Value: admin.DefaultWebhookGrace, Usage: "a playnode that comes back within this after going down sends no webhook", EnvVars: []string{"PARADIGM_RELAY_WEBHOOK_GRACE"}},
		&cli.IntFlag{Name: "webhook-queue", Destination: &f.admin.WebhookQueue, Value: admin.DefaultWebhookQueue, Usage: "events waiting for each webhook receiver; when full the oldest are dropped", EnvVars: []string{"PARADIGM_RELAY_WEBHOOK_QUEUE"}},
	}
}

// configs completes the two configs with what needs parsing or belongs to
// the global flags (--data, the --store flags), and returns them. Its
// errors name the flag.
func (f *serveFlags) configs(c *cli.Context) (relay.Config, admin.Config, error) {
	rc, ac := f.relay, f.admin
	var err error
	if rc.PortLow, rc.PortHigh, err = relay.ParsePortRange(f.ports); err != nil {
		return rc, ac, fmt.Errorf("--ports: %w", err)
	}
	sh, err := OpenShared(c)
	if err != nil {
		return rc, ac, err
	}
	rc.Store, rc.Docs = sh.Store(), sh.Docs() // closed when the process ends
	rc.DataDir, ac.Webhooks = c.String("data"), c.StringSlice("webhook")
	return rc, ac, nil
}

// adminTokenFlag is --admin-token-file: serve reads the tokens it accepts
// from it, ls and ssh-config the one they send to a running relay.
func adminTokenFlag(dest *string) cli.Flag {
	return &cli.StringFlag{Name: "admin-token-file", Destination: dest, Usage: "file of bearer tokens for the admin endpoint, one a line (write actions need one, even on loopback)", EnvVars: []string{"PARADIGM_RELAY_ADMIN_TOKEN_FILE"}}
}

// Demo is `paradigm-relay demo`.
func Demo() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "run a relay and a playnode on loopback with a sample web service, and print the portalias to try",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "ports", Value: defaultPorts, Usage: "range portaliases are assigned from", EnvVars: []string{"PARADIGM_RELAY_DEMO_PORTS"}},
			&cli.BoolFlag{Name: "once", Usage: "exit after fetching the sample service once through its portalias", EnvVars: []string{"PARADIGM_RELAY_DEMO_ONCE"}},
		},
		Action: func(c *cli.Context) error {
			log, err := cliflags.New(c, os.Stderr)
			if err != nil {
				return err
			}
			low, high, err := relay.ParsePortRange(c.String("ports"))
			if err != nil {
				return fmt.Errorf("--ports: %w", err)
			}
			return demo.Run(c.Context, demo.Config{PortLow: low, PortHigh: high, Once: c.Bool("once"), Out: c.App.Writer, Logger: log})
		},
	}
}
