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

// Serve is `paradigm-relay serve`. Each flag fills its field of relay.Config
// or admin.Config directly (Destination); the few that need parsing
// (--ports, the --store flags, --webhook) are read in the action, whose
// errors name the flag.
func Serve() *cli.Command {
	var rc relay.Config
	var ac admin.Config
	var ports string
	return &cli.Command{
		Name:  "serve",
		Usage: "run the relay",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "listen", Destination: &rc.Listen, Value: relay.DefaultListen, Usage: "address playnodes dial (SSH)", EnvVars: []string{"PARADIGM_RELAY_LISTEN"}},
			&cli.StringFlag{Name: "quic-listen", Destination: &rc.QUICListen, Usage: "also serve playnodes over QUIC on this UDP address (e.g. :4422, the same port number as --listen); off when empty", EnvVars: []string{"PARADIGM_RELAY_QUIC_LISTEN"}},
			&cli.StringFlag{Name: "ports", Destination: &ports, Value: defaultPorts, Usage: "range portaliases are assigned from", EnvVars: []string{"PARADIGM_RELAY_PORTS"}},
			&cli.StringFlag{Name: "bind", Destination: &rc.Bind, Value: relay.DefaultBind, Usage: "address portaliases listen on; anything but loopback exposes every playnode's services to the network", EnvVars: []string{"PARADIGM_RELAY_BIND"}},
			&cli.DurationFlag{Name: "keepalive", Destination: &rc.Keepalive, Value: relay.DefaultKeepalive, Usage: "liveness check interval both ways; a dead link is detected within 2.25 times this", EnvVars: []string{"PARADIGM_RELAY_KEEPALIVE"}},
			&cli.DurationFlag{Name: "handshake-timeout", Destination: &rc.HandshakeTimeout, Value: relay.DefaultHandshakeTimeout, Usage: "bound on SSH handshake, authentication and hello", EnvVars: []string{"PARADIGM_RELAY_HANDSHAKE_TIMEOUT"}},
			&cli.DurationFlag{Name: "first-bytes-timeout", Destination: &rc.FirstBytesTimeout, Value: relay.DefaultFirstBytesTimeout, Usage: "wait for a playnode connection's SSH version line before it may take a handshake slot", EnvVars: []string{"PARADIGM_RELAY_FIRST_BYTES_TIMEOUT"}},
			&cli.IntFlag{Name: "max-handshakes", Destination: &rc.MaxHandshakes, Value: relay.DefaultMaxHandshakes, Usage: "handshakes in progress at once", EnvVars: []string{"PARADIGM_RELAY_MAX_HANDSHAKES"}},
			&cli.IntFlag{Name: "max-unauth-per-address", Destination: &rc.MaxUnauthPerAddress, Value: relay.DefaultMaxUnauthPerAddress, Usage: "connections from one source address that have not authenticated yet; more are closed at once", EnvVars: []string{"PARADIGM_RELAY_MAX_UNAUTH_PER_ADDRESS"}},
			&cli.IntFlag{Name: "max-streams-per-node", Destination: &rc.MaxStreamsPerNode, Value: relay.DefaultMaxStreamsPerNode, Usage: "connections forwarded to one playnode at once; more are closed at once", EnvVars: []string{"PARADIGM_RELAY_MAX_STREAMS_PER_NODE"}},
			&cli.IntFlag{Name: "max-streams-per-portalias", Destination: &rc.MaxStreamsPerPortalias, Value: relay.DefaultMaxStreamsPerPortalias, Usage: "connections forwarded through one portalias at once; more are closed at once", EnvVars: []string{"PARADIGM_RELAY_MAX_STREAMS_PER_PORTALIAS"}},
			&cli.IntFlag{Name: "peer-log-lines", Destination: &rc.PeerLogLines, Value: relay.DefaultPeerLogLines, Usage: "log lines peers may cause per reason and minute (refused connections, unknown keys); the rest are counted and summarised", EnvVars: []string{"PARADIGM_RELAY_PEER_LOG_LINES"}},
			&cli.IntFlag{Name: "max-portaliases-per-node", Destination: &rc.MaxPortaliasesPerNode, Value: relay.DefaultMaxPortaliasesPerNode, Usage: "portaliases one playnode may hold, and new ones it may get per hour", EnvVars: []string{"PARADIGM_RELAY_MAX_PORTALIASES_PER_NODE"}},
			&cli.DurationFlag{Name: "reload-interval", Destination: &rc.ReloadInterval, Value: relay.DefaultReloadInterval, Usage: "how often edits to authorized_nodes and portaliases are picked up", EnvVars: []string{"PARADIGM_RELAY_RELOAD_INTERVAL"}},
			&cli.IntFlag{Name: "max-pending", Destination: &rc.MaxPending, Value: relay.DefaultMaxPending, Usage: "enrollments waiting for approval and rejected keys kept at once; more enrollments that need approval are refused", EnvVars: []string{"PARADIGM_RELAY_MAX_PENDING"}},
			&cli.IntFlag{Name: "enroll-per-minute", Destination: &rc.EnrollPerMinute, Value: relay.DefaultEnrollPerMinute, Usage: "enrollment attempts one source address may make at once and per minute", EnvVars: []string{"PARADIGM_RELAY_ENROLL_PER_MINUTE"}},
			&cli.IntFlag{Name: "procs", Value: 0, DefaultText: "0: all CPUs", Usage: "CPUs running the relay's Go code at once (GOMAXPROCS), 0 for all", EnvVars: []string{"PARADIGM_RELAY_PROCS"}},
			&cli.StringFlag{Name: "admin", Destination: &ac.Listen, Value: admin.DefaultListen, Usage: "address of the admin endpoint (JSON API, events, metrics, status page); \"\" turns it off; anything but loopback needs --admin-token-file", EnvVars: []string{"PARADIGM_RELAY_ADMIN"}},
			adminTokenFlag(&ac.TokenFile),
			&cli.StringFlag{Name: "admin-tls-cert", Destination: &ac.TLSCert, Usage: "serve the admin endpoint over HTTPS with this certificate (PEM)", EnvVars: []string{"PARADIGM_RELAY_ADMIN_TLS_CERT"}},
			&cli.StringFlag{Name: "admin-tls-key", Destination: &ac.TLSKey, Usage: "the key of --admin-tls-cert (PEM)", EnvVars: []string{"PARADIGM_RELAY_ADMIN_TLS_KEY"}},
			&cli.IntFlag{Name: "admin-max-conns", Destination: &ac.MaxConns, Value: admin.DefaultMaxConns, Usage: "connections to the admin endpoint open at once; more wait until one closes", EnvVars: []string{"PARADIGM_RELAY_ADMIN_MAX_CONNS"}},
			&cli.IntFlag{Name: "admin-max-sse-clients", Destination: &ac.MaxSSEClients, Value: admin.DefaultMaxSSEClients, Usage: "event streams (/api/v1/events, status pages) served at once", EnvVars: []string{"PARADIGM_RELAY_ADMIN_MAX_SSE_CLIENTS"}},
			&cli.IntFlag{Name: "admin-event-ring", Destination: &ac.EventRing, Value: admin.DefaultEventRing, Usage: "recent events kept for event streams that reconnect (Last-Event-ID)", EnvVars: []string{"PARADIGM_RELAY_ADMIN_EVENT_RING"}},
			&cli.StringSliceFlag{Name: "webhook", Usage: "POST every event as signed JSON to this URL (repeatable)", EnvVars: []string{"PARADIGM_RELAY_WEBHOOK"}},
			&cli.StringFlag{Name: "webhook-secret", Destination: &ac.WebhookSecretFile, Usage: "file holding the HMAC-SHA256 key webhook deliveries are signed with (required with --webhook)", EnvVars: []string{"PARADIGM_RELAY_WEBHOOK_SECRET"}},
			&cli.DurationFlag{Name: "webhook-grace", Destination: &ac.WebhookGrace, Value: admin.DefaultWebhookGrace, Usage: "a playnode that comes back within this after going down sends no webhook", EnvVars: []string{"PARADIGM_RELAY_WEBHOOK_GRACE"}},
			&cli.IntFlag{Name: "webhook-queue", Destination: &ac.WebhookQueue, Value: admin.DefaultWebhookQueue, Usage: "events waiting for each webhook receiver; when full the oldest are dropped", EnvVars: []string{"PARADIGM_RELAY_WEBHOOK_QUEUE"}},
		},
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
			if rc.PortLow, rc.PortHigh, err = relay.ParsePortRange(ports); err != nil {
				return fmt.Errorf("--ports: %w", err)
			}
			if rc.Store, err = OpenStore(c); err != nil {
				return err
			}
			rc.DataDir, rc.Logger = c.String("data"), log
			r, err := relay.New(rc)
			if err != nil {
				return err
			}
			ac.Webhooks, ac.Logger = c.StringSlice("webhook"), log
			return admin.Serve(c.Context, r, ac)
		},
	}
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
