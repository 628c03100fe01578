// Command paradigm-relay is the server side of paradigm: it accepts playnodes
// on one port and exposes each of their services on this server's loopback
// at a stable portalias. It only parses flags; internal/relay does the work.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"paradigm/internal/admin"
	"paradigm/internal/cliflags"
	"paradigm/internal/demo"
	"paradigm/internal/relay"
	"paradigm/internal/store"
	"paradigm/internal/store/etcdstore"
)

// globalFlags work before the command and after it.
func globalFlags() []cli.Flag {
	return append(cliflags.Flags("PARADIGM_RELAY"),
		&cli.StringFlag{Name: "data", Value: relay.DefaultDataDir, Usage: "data folder: host key, authorized nodes, portaliases, status", EnvVars: []string{"PARADIGM_RELAY_DATA"}})
}

func main() {
	// quic-go prints its own receive-buffer warning through the log
	// package; internal/mux logs one clear line of ours instead.
	os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newApp().RunContext(ctx, os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "paradigm-relay:", err)
		os.Exit(1)
	}
}

func newApp() *cli.App {
	app := &cli.App{
		Name:                 "paradigm-relay",
		Usage:                "expose the services of every playnode on this server's loopback at stable portaliases",
		Version:              cliflags.Version(),
		EnableBashCompletion: true,
		Commands: []*cli.Command{
			serveCommand(),
			{
				Name:      "authorize",
				Usage:     "bind a playnode's public key to its name in the authorized-nodes file",
				ArgsUsage: "NAME PUBKEY (the public key line, quoted, or a .pub file)",
				Action: func(c *cli.Context) error {
					if c.NArg() != 2 {
						return errors.New("authorize takes NAME and PUBKEY, e.g. authorize signage-042 \"$(cat node.key.pub)\"")
					}
					msg, err := relay.AuthorizeNode(c.String("data"), c.Args().Get(0), c.Args().Get(1))
					return printed(c, msg, err)
				},
			},
			{
				Name:  "fingerprint",
				Usage: "print the relay's host key fingerprint (creating the key if there is none yet)",
				Action: func(c *cli.Context) error {
					fp, err := relay.Fingerprint(c.String("data"))
					return printed(c, fp, err)
				},
			},
			lsCommand(),
			sshConfigCommand(),
			aliasCommand(),
			tokenCommand(), pendingCommand(), approveCommand(), rejectCommand(), nodesCommand(), revokeCommand(), hostkeyCommand(), // enroll.go
			{
				Name:  "demo",
				Usage: "run a relay and a playnode on loopback with a sample web service, and print the portalias to try",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "ports", Value: fmt.Sprintf("%d-%d", relay.DefaultLowPort, relay.DefaultHiPort), Usage: "range portaliases are assigned from", EnvVars: []string{"PARADIGM_RELAY_DEMO_PORTS"}},
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
			},
		},
	}
	cliflags.Global(app, globalFlags)
	return app
}

// printed prints msg on its own line unless err.
func printed(c *cli.Context, msg string, err error) error {
	if err != nil {
		return err
	}
	fmt.Fprintln(c.App.Writer, msg)
	return nil
}

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "run the relay",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "listen", Value: relay.DefaultListen, Usage: "address playnodes dial (SSH)", EnvVars: []string{"PARADIGM_RELAY_LISTEN"}},
			&cli.StringFlag{Name: "quic-listen", Usage: "also serve playnodes over QUIC on this UDP address (e.g. :4422, the same port number as --listen); off when empty", EnvVars: []string{"PARADIGM_RELAY_QUIC_LISTEN"}},
			&cli.StringFlag{Name: "ports", Value: fmt.Sprintf("%d-%d", relay.DefaultLowPort, relay.DefaultHiPort), Usage: "range portaliases are assigned from", EnvVars: []string{"PARADIGM_RELAY_PORTS"}},
			&cli.StringFlag{Name: "bind", Value: relay.DefaultBind, Usage: "address portaliases listen on; anything but loopback exposes every playnode's services to the network", EnvVars: []string{"PARADIGM_RELAY_BIND"}},
			&cli.DurationFlag{Name: "keepalive", Value: relay.DefaultKeepalive, Usage: "liveness check interval both ways; a dead link is detected within 2.25 times this", EnvVars: []string{"PARADIGM_RELAY_KEEPALIVE"}},
			&cli.DurationFlag{Name: "handshake-timeout", Value: relay.DefaultHandshakeTimeout, Usage: "bound on SSH handshake, authentication and hello", EnvVars: []string{"PARADIGM_RELAY_HANDSHAKE_TIMEOUT"}},
			&cli.DurationFlag{Name: "first-bytes-timeout", Value: relay.DefaultFirstBytesTimeout, Usage: "wait for a playnode connection's SSH version line before it may take a handshake slot", EnvVars: []string{"PARADIGM_RELAY_FIRST_BYTES_TIMEOUT"}},
			&cli.IntFlag{Name: "max-handshakes", Value: relay.DefaultMaxHandshakes, Usage: "handshakes in progress at once", EnvVars: []string{"PARADIGM_RELAY_MAX_HANDSHAKES"}},
			&cli.IntFlag{Name: "max-unauth-per-address", Value: relay.DefaultMaxUnauthPerAddress, Usage: "connections from one source address that have not authenticated yet; more are closed at once", EnvVars: []string{"PARADIGM_RELAY_MAX_UNAUTH_PER_ADDRESS"}},
			&cli.IntFlag{Name: "max-streams-per-node", Value: relay.DefaultMaxStreamsPerNode, Usage: "connections forwarded to one playnode at once; more are closed at once", EnvVars: []string{"PARADIGM_RELAY_MAX_STREAMS_PER_NODE"}},
			&cli.IntFlag{Name: "max-streams-per-portalias", Value: relay.DefaultMaxStreamsPerPortalias, Usage: "connections forwarded through one portalias at once; more are closed at once", EnvVars: []string{"PARADIGM_RELAY_MAX_STREAMS_PER_PORTALIAS"}},
			&cli.IntFlag{Name: "peer-log-lines", Value: relay.DefaultPeerLogLines, Usage: "log lines peers may cause per reason and minute (refused connections, unknown keys); the rest are counted and summarised", EnvVars: []string{"PARADIGM_RELAY_PEER_LOG_LINES"}},
			&cli.IntFlag{Name: "max-portaliases-per-node", Value: relay.DefaultMaxPortaliasesPerNode, Usage: "portaliases one playnode may hold, and new ones it may get per hour", EnvVars: []string{"PARADIGM_RELAY_MAX_PORTALIASES_PER_NODE"}},
			&cli.DurationFlag{Name: "reload-interval", Value: relay.DefaultReloadInterval, Usage: "how often edits to authorized_nodes and portaliases are picked up", EnvVars: []string{"PARADIGM_RELAY_RELOAD_INTERVAL"}},
			&cli.StringFlag{Name: "store", Usage: "keep portaliases in etcd, shared by several relays: etcd://HOST:PORT[,HOST:PORT...]/PREFIX; the flat file in --data when empty", EnvVars: []string{"PARADIGM_RELAY_STORE"}},
			&cli.StringFlag{Name: "store-ca", Usage: "PEM file of the CA that signed etcd's certificate (turns TLS on)", EnvVars: []string{"PARADIGM_RELAY_STORE_CA"}},
			&cli.StringFlag{Name: "store-cert", Usage: "PEM client certificate for etcd's TLS client authentication (with --store-key)", EnvVars: []string{"PARADIGM_RELAY_STORE_CERT"}},
			&cli.StringFlag{Name: "store-key", Usage: "PEM private key of --store-cert", EnvVars: []string{"PARADIGM_RELAY_STORE_KEY"}},
			&cli.IntFlag{Name: "max-pending", Value: relay.DefaultMaxPending, Usage: "enrollments waiting for approval and rejected keys kept at once; more enrollments that need approval are refused", EnvVars: []string{"PARADIGM_RELAY_MAX_PENDING"}},
			&cli.IntFlag{Name: "enroll-per-minute", Value: relay.DefaultEnrollPerMinute, Usage: "enrollment attempts one source address may make at once and per minute", EnvVars: []string{"PARADIGM_RELAY_ENROLL_PER_MINUTE"}},
			&cli.IntFlag{Name: "procs", Value: 0, DefaultText: "0: all CPUs", Usage: "CPUs running the relay's Go code at once (GOMAXPROCS), 0 for all", EnvVars: []string{"PARADIGM_RELAY_PROCS"}},
			&cli.StringFlag{Name: "admin", Value: admin.DefaultListen, Usage: "address of the admin endpoint (JSON API, events, metrics, status page); \"\" turns it off; anything but loopback needs --admin-token-file", EnvVars: []string{"PARADIGM_RELAY_ADMIN"}},
			adminTokenFlag(),
			&cli.StringFlag{Name: "admin-tls-cert", Usage: "serve the admin endpoint over HTTPS with this certificate (PEM)", EnvVars: []string{"PARADIGM_RELAY_ADMIN_TLS_CERT"}},
			&cli.StringFlag{Name: "admin-tls-key", Usage: "the key of --admin-tls-cert (PEM)", EnvVars: []string{"PARADIGM_RELAY_ADMIN_TLS_KEY"}},
			&cli.IntFlag{Name: "admin-max-conns", Value: admin.DefaultMaxConns, Usage: "connections to the admin endpoint open at once; more wait until one closes", EnvVars: []string{"PARADIGM_RELAY_ADMIN_MAX_CONNS"}},
			&cli.IntFlag{Name: "admin-max-sse-clients", Value: admin.DefaultMaxSSEClients, Usage: "event streams (/api/v1/events, status pages) served at once", EnvVars: []string{"PARADIGM_RELAY_ADMIN_MAX_SSE_CLIENTS"}},
			&cli.IntFlag{Name: "admin-event-ring", Value: admin.DefaultEventRing, Usage: "recent events kept for event streams that reconnect (Last-Event-ID)", EnvVars: []string{"PARADIGM_RELAY_ADMIN_EVENT_RING"}},
			&cli.StringSliceFlag{Name: "webhook", Usage: "POST every event as signed JSON to this URL (repeatable)", EnvVars: []string{"PARADIGM_RELAY_WEBHOOK"}},
			&cli.StringFlag{Name: "webhook-secret", Usage: "file holding the HMAC-SHA256 key webhook deliveries are signed with (required with --webhook)", EnvVars: []string{"PARADIGM_RELAY_WEBHOOK_SECRET"}},
			&cli.DurationFlag{Name: "webhook-grace", Value: admin.DefaultWebhookGrace, Usage: "a playnode that comes back within this after going down sends no webhook", EnvVars: []string{"PARADIGM_RELAY_WEBHOOK_GRACE"}},
			&cli.IntFlag{Name: "webhook-queue", Value: admin.DefaultWebhookQueue, Usage: "events waiting for each webhook receiver; when full the oldest are dropped", EnvVars: []string{"PARADIGM_RELAY_WEBHOOK_QUEUE"}},
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
			low, high, err := relay.ParsePortRange(c.String("ports"))
			if err != nil {
				return fmt.Errorf("--ports: %w", err)
			}
			st, err := etcdstore.OpenURL(c.String("store"), c.String("store-ca"), c.String("store-cert"), c.String("store-key"))
			if err != nil {
				return err
			}
			r, err := relay.New(relay.Config{
				DataDir:                c.String("data"),
				Listen:                 c.String("listen"),
				QUICListen:             c.String("quic-listen"),
				PortLow:                low,
				PortHigh:               high,
				Bind:                   c.String("bind"),
				Keepalive:              c.Duration("keepalive"),
				HandshakeTimeout:       c.Duration("handshake-timeout"),
				MaxHandshakes:          c.Int("max-handshakes"),
				FirstBytesTimeout:      c.Duration("first-bytes-timeout"),
				ReloadInterval:         c.Duration("reload-interval"),
				MaxUnauthPerAddress:    c.Int("max-unauth-per-address"),
				MaxStreamsPerNode:      c.Int("max-streams-per-node"),
				MaxStreamsPerPortalias: c.Int("max-streams-per-portalias"),
				MaxPortaliasesPerNode:  c.Int("max-portaliases-per-node"),
				PeerLogLines:           c.Int("peer-log-lines"),
				Store:                  st,
				EnrollPerMinute:        c.Int("enroll-per-minute"),
				MaxPending:             c.Int("max-pending"),
				Logger:                 log,
			})
			if err != nil {
				return err
			}
			return admin.Serve(c.Context, r, admin.Config{
				Listen:            c.String("admin"),
				TokenFile:         c.String("admin-token-file"),
				TLSCert:           c.String("admin-tls-cert"),
				TLSKey:            c.String("admin-tls-key"),
				MaxSSEClients:     c.Int("admin-max-sse-clients"),
				MaxConns:          c.Int("admin-max-conns"),
				EventRing:         c.Int("admin-event-ring"),
				Webhooks:          c.StringSlice("webhook"),
				WebhookSecretFile: c.String("webhook-secret"),
				WebhookGrace:      c.Duration("webhook-grace"),
				WebhookQueue:      c.Int("webhook-queue"),
				Logger:            log,
			})
		},
	}
}

func adminTokenFlag() cli.Flag {
	return &cli.StringFlag{Name: "admin-token-file", Usage: "file of bearer tokens for the admin endpoint, one a line (write actions need one, even on loopback)", EnvVars: []string{"PARADIGM_RELAY_ADMIN_TOKEN_FILE"}}
}

func sshConfigCommand() *cli.Command {
	return &cli.Command{
		Name:      "ssh-config",
		Usage:     "print an ssh_config Host block for every playnode with an ssh service, between marker lines",
		ArgsUsage: "[PLAYNODE-PREFIX...]",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "proxy-jump", Usage: "add ProxyJump USER@SERVER, so that `ssh PLAYNODE` works from another machine", EnvVars: []string{"PARADIGM_RELAY_PROXY_JUMP"}},
			adminTokenFlag(),
		},
		Action: func(c *cli.Context) error {
			token, err := admin.FirstToken(c.String("admin-token-file"))
			if err != nil {
				return err
			}
			rows, _, err := admin.List(c.Context, c.String("data"), token)
			if err != nil {
				return err
			}
			return admin.WriteSSHConfig(c.App.Writer, relay.Filter{Prefixes: c.Args().Slice()}.Apply(rows), c.String("proxy-jump"))
		},
	}
}

func lsCommand() *cli.Command {
	return &cli.Command{
		Name:      "ls",
		Usage:     "list portaliases: playnode, service, service port, portalias, online, last seen",
		ArgsUsage: "[PLAYNODE-PREFIX...]",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print a JSON array", EnvVars: []string{"PARADIGM_RELAY_LS_JSON"}},
			&cli.BoolFlag{Name: "online", Usage: "only services reachable now"},
			&cli.BoolFlag{Name: "offline", Usage: "only services not reachable now"},
			adminTokenFlag(),
		},
		Action: func(c *cli.Context) error {
			if c.Bool("online") && c.Bool("offline") {
				return errors.New("--online and --offline exclude each other")
			}
			token, err := admin.FirstToken(c.String("admin-token-file"))
			if err != nil {
				return err
			}
			rows, running, err := admin.List(c.Context, c.String("data"), token)
			if err != nil {
				return err
			}
			f := relay.Filter{Prefixes: c.Args().Slice(), Online: c.Bool("online"), Offline: c.Bool("offline")}
			if err := relay.WriteRows(c.App.Writer, f.Apply(rows), c.Bool("json")); err != nil {
				return err
			}
			if !running {
				fmt.Fprintln(c.App.ErrWriter, "(no relay is running on this data folder: every playnode is shown offline)")
			}
			return nil
		},
	}
}

func aliasCommand() *cli.Command {
	return &cli.Command{
		Name:  "alias",
		Usage: "pin, move or remove portaliases (a running relay applies the change within its reload interval)",
		Subcommands: []*cli.Command{
			{
				Name:      "set",
				Usage:     "pin or move a playnode service's portalias; with a running relay, returns once it is bound",
				ArgsUsage: "PLAYNODE SERVICE PORTALIAS",
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "force", Usage: "allow a portalias outside the relay's --ports"}},
				Action: func(c *cli.Context) error {
					if c.NArg() != 3 {
						return errors.New("alias set takes PLAYNODE SERVICE PORTALIAS")
					}
					port, err := relay.ParsePortalias(c.Args().Get(2))
					if err != nil {
						return err
					}
					a := store.Assignment{Playnode: c.Args().Get(0), Service: c.Args().Get(1), Portalias: port}
					err = relay.AliasSet(c.Context, c.String("data"), a, c.Bool("force"))
					return printed(c, fmt.Sprintf("%s %s -> portalias %d", a.Playnode, a.Service, a.Portalias), err)
				},
			},
			{
				Name:      "prune",
				Usage:     "remove stale portaliases: of services the playnode's last hello did not register",
				ArgsUsage: "[PLAYNODE...] (all playnodes when none)",
				Action: func(c *cli.Context) error {
					removed, err := relay.AliasPrune(c.Context, c.String("data"), c.Args().Slice())
					for _, a := range removed {
						fmt.Fprintf(c.App.Writer, "removed %s %s portalias %d\n", a.Playnode, a.Service, a.Portalias)
					}
					if err == nil && len(removed) == 0 {
						fmt.Fprintln(c.App.Writer, "no stale portalias")
					}
					return err
				},
			},
			{
				Name:      "rm",
				Usage:     "remove a playnode service's portalias, or all of a playnode's",
				ArgsUsage: "PLAYNODE [SERVICE]",
				Action: func(c *cli.Context) error {
					if c.NArg() < 1 || c.NArg() > 2 {
						return errors.New("alias rm takes PLAYNODE [SERVICE]")
					}
					playnode := c.Args().Get(0)
					n, err := relay.AliasRemove(c.Context, c.String("data"), playnode, c.Args().Get(1))
					return printed(c, fmt.Sprintf("removed %d portalias(es) of %s", n, playnode), err)
				},
			},
		},
	}
}
