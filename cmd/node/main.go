// Command paradigm-node runs on each playnode: it dials the relay over one
// port, keeps the connection up forever, and serves the playnode's
// configured services through it.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/urfave/cli/v2"

	"paradigm/internal/cliflags"
	"paradigm/internal/identity"
	"paradigm/internal/node"
)

func main() {
	// quic-go prints its own receive-buffer warning through the log
	// package; internal/mux logs one clear line of ours instead.
	os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newApp().RunContext(ctx, os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "paradigm-node:", err)
		os.Exit(1)
	}
}

func newApp() *cli.App {
	app := &cli.App{
		Name:    "paradigm-node",
		Usage:   "keep this playnode's services reachable through a paradigm relay",
		Version: cliflags.Version(),
		Commands: []*cli.Command{
			{
				Name:  "keygen",
				Usage: "create this playnode's ed25519 key and print its public line (for paradigm-relay authorize)",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "key", Required: true, Usage: "where to write the private key (FILE.pub gets the public line)", EnvVars: []string{"PARADIGM_NODE_KEY"}},
				},
				Action: func(c *cli.Context) error {
					signer, err := identity.GenerateKey(c.String("key"), hostname())
					if err != nil {
						return err
					}
					fmt.Fprintln(c.App.Writer, identity.PublicLine(signer.PublicKey(), hostname()))
					return nil
				},
			},
			runCommand(),
		},
	}
	cliflags.Global(app, func() []cli.Flag { return cliflags.Flags("PARADIGM_NODE") })
	return app
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return ""
	}
	return h
}

// runFlags are the settings of `run`; a config file's keys are these names.
func runFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "config", Usage: "file of key = value lines, keys named as these flags; flags and environment win over it", EnvVars: []string{"PARADIGM_NODE_CONFIG"}},
		&cli.StringSliceFlag{Name: "relay", Usage: "relay address HOST:PORT; repeatable (or comma-separated): tried in order, failing over to the next, a HOST with several addresses counting as several relays", EnvVars: []string{"PARADIGM_NODE_RELAY"}},
		&cli.DurationFlag{Name: "prefer-first-after", Value: node.DefaultPreferFirstAfter, Usage: "on a relay that is not the first listed, probe the earlier ones this often and move back to the first that answers; 0 stays put", EnvVars: []string{"PARADIGM_NODE_PREFER_FIRST_AFTER"}},
		&cli.StringFlag{Name: "transport", Value: "ssh", Usage: "ssh (TCP), quic (UDP, same address), or auto: quic when UDP gets through, else ssh", EnvVars: []string{"PARADIGM_NODE_TRANSPORT"}},
		&cli.StringSliceFlag{Name: "fingerprint", Usage: "the relay's host key fingerprint, SHA256:... (paradigm-relay fingerprint prints it); repeatable: any of them is trusted", EnvVars: []string{"PARADIGM_NODE_FINGERPRINT"}},
		&cli.StringFlag{Name: "known-hosts", Usage: "OpenSSH known_hosts file to verify the relay with (instead of --fingerprint)", EnvVars: []string{"PARADIGM_NODE_KNOWN_HOSTS"}},
		&cli.BoolFlag{Name: "trust-on-first-use", Usage: "record the relay's key in --known-hosts on first connection, refuse any other later", EnvVars: []string{"PARADIGM_NODE_TRUST_ON_FIRST_USE"}},
		&cli.StringFlag{Name: "key", Usage: "this playnode's private key (paradigm-node keygen, or an ssh-keygen key without passphrase)", EnvVars: []string{"PARADIGM_NODE_KEY"}},
		&cli.StringFlag{Name: "name", Value: hostname(), DefaultText: "this machine's hostname", Usage: "playnode name (the relay binds it to the key); a template may use {hostname}, {machine-id:N} (its first N characters) and {mac}", EnvVars: []string{"PARADIGM_NODE_NAME"}},
		&cli.StringFlag{Name: "enroll-token", Usage: "enrollment token (paradigm-relay token create) to bind this node's key on first contact; a missing --key file is then created", EnvVars: []string{"PARADIGM_NODE_ENROLL_TOKEN"}},
		&cli.StringFlag{Name: "machine-id-file", Value: node.DefaultMachineIDFile, Usage: "where {machine-id} in --name is read", EnvVars: []string{"PARADIGM_NODE_MACHINE_ID_FILE"}},
		&cli.DurationFlag{Name: "refused-retry", Value: node.DefaultRefusedRetry, Usage: "longest wait between attempts while the relay refuses this node for a reason only its operator can change (unknown key or token, pending approval, name taken, revoked); the wait grows to it from half a second", EnvVars: []string{"PARADIGM_NODE_REFUSED_RETRY"}},
		&cli.StringSliceFlag{Name: "service", Usage: "a local service to expose, NAME=[HOST:]PORT (HOST defaults to 127.0.0.1); repeatable", EnvVars: []string{"PARADIGM_NODE_SERVICE"}},
		&cli.StringFlag{Name: "lock", Value: filepath.Join(os.TempDir(), "paradigm-node.lock"), Usage: "single-instance lock: a second run with the same lock exits 0 at once", EnvVars: []string{"PARADIGM_NODE_LOCK"}},
		&cli.DurationFlag{Name: "keepalive", Value: node.DefaultKeepalive, Usage: "liveness check interval both ways; a dead link is detected within 2.25 times this", EnvVars: []string{"PARADIGM_NODE_KEEPALIVE"}},
		&cli.DurationFlag{Name: "backoff-max", Value: node.DefaultBackoffMax, Usage: "longest wait between reconnection attempts", EnvVars: []string{"PARADIGM_NODE_BACKOFF_MAX"}},
		&cli.BoolFlag{Name: "verbose", Usage: "when another instance holds --lock, log that before exiting 0 (silent otherwise, for cron)", EnvVars: []string{"PARADIGM_NODE_VERBOSE"}},
		&cli.IntFlag{Name: "max-streams", Value: node.DefaultMaxStreams, Usage: "connections served at once; more are refused (the relay closes them) with a warning at most every 10s", EnvVars: []string{"PARADIGM_NODE_MAX_STREAMS"}},
		&cli.StringFlag{Name: "max-buffer", Value: node.FormatSize(node.DefaultMaxBuffer), Usage: "data the relay may send ahead of the services, all connections together; each connection's window is this / --max-streams (at least 256KiB, at most 4MiB)", EnvVars: []string{"PARADIGM_NODE_MAX_BUFFER"}},
		&cli.IntFlag{Name: "procs", Value: 1, Usage: "CPUs running the node's Go code at once (GOMAXPROCS), 0 for all; 1 forwards with the least CPU per byte and leaves the other cores to the device's player", EnvVars: []string{"PARADIGM_NODE_PROCS"}},
	}
}

func runCommand() *cli.Command {
	return &cli.Command{
		Name:   "run",
		Usage:  "connect to the relay and stay connected",
		Flags:  runFlags(),
		Action: run,
	}
}

func run(c *cli.Context) error {
	if c.Args().Present() {
		return fmt.Errorf("run takes no arguments, got %q", c.Args().Slice())
	}
	if path := c.String("config"); path != "" {
		if err := cliflags.ApplyConfigFile(c, path); err != nil {
			return err
		}
	}
	log, err := cliflags.New(c, os.Stderr)
	if err != nil {
		return err
	}
	if err := cliflags.SetProcs(c, "procs"); err != nil {
		return err
	}
	cfg := node.Config{
		Relays:           c.StringSlice("relay"),
		PreferFirstAfter: c.Duration("prefer-first-after"),
		Transport:        c.String("transport"),
		Fingerprints:     c.StringSlice("fingerprint"),
		KnownHosts:       c.String("known-hosts"),
		TrustOnFirstUse:  c.Bool("trust-on-first-use"),
		KeyFile:          c.String("key"),
		Name:             c.String("name"),
		EnrollToken:      c.String("enroll-token"),
		MachineIDFile:    c.String("machine-id-file"),
		RefusedRetry:     c.Duration("refused-retry"),
		Keepalive:        c.Duration("keepalive"),
		BackoffMax:       c.Duration("backoff-max"),
		MaxStreams:       c.Int("max-streams"),
		Logger:           log,
	}
	if cfg.MaxBuffer, err = node.ParseSize(c.String("max-buffer")); err != nil {
		return fmt.Errorf("--max-buffer: %w", err)
	}
	if cfg.Services, err = node.ParseServices(c.StringSlice("service")); err != nil {
		return err
	}
	n, err := node.New(cfg)
	if err != nil {
		return err
	}
	return n.RunSingle(c.Context, c.String("lock"), c.Bool("verbose"))
}
