// Command paradigm-relay is the server side of paradigm: it accepts playnodes
// on one port and exposes each of their services on this server's loopback
// at a stable portalias.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"paradigm/internal/cliflags"
	"paradigm/internal/identity"
	"paradigm/internal/proto"
	"paradigm/internal/relay"
	"paradigm/internal/store"
)

const defaultData = "/var/lib/paradigm-relay"

var dataFlag = &cli.StringFlag{Name: "data", Value: defaultData, Usage: "data folder: host key, authorized nodes, portaliases, status", EnvVars: []string{"PARADIGM_RELAY_DATA"}}

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
	return &cli.App{
		Name:                 "paradigm-relay",
		Usage:                "expose the services of every playnode on this server's loopback at stable portaliases",
		Flags:                cliflags.Flags("PARADIGM_RELAY"),
		EnableBashCompletion: true,
		Commands: []*cli.Command{
			serveCommand(),
			{
				Name:      "authorize",
				Usage:     "bind a playnode's public key to its name in the authorized-nodes file",
				ArgsUsage: "NAME PUBKEY (the public key line, quoted, or a .pub file)",
				Flags:     []cli.Flag{dataFlag},
				Action:    authorize,
			},
			{
				Name:   "fingerprint",
				Usage:  "print the relay's host key fingerprint (creating the key if there is none yet)",
				Flags:  []cli.Flag{dataFlag},
				Action: fingerprint,
			},
			{
				Name:  "ls",
				Usage: "list portaliases: playnode, service, service port, portalias, online, last seen",
				Flags: []cli.Flag{dataFlag,
					&cli.BoolFlag{Name: "json", Usage: "print a JSON array", EnvVars: []string{"PARADIGM_RELAY_LS_JSON"}}},
				Action: list,
			},
			aliasCommand(),
			demoCommand(),
		},
	}
}

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "run the relay",
		Flags: []cli.Flag{
			dataFlag,
			&cli.StringFlag{Name: "listen", Value: relay.DefaultListen, Usage: "address playnodes dial (SSH)", EnvVars: []string{"PARADIGM_RELAY_LISTEN"}},
			&cli.StringFlag{Name: "quic-listen", Usage: "also serve playnodes over QUIC on this UDP address (e.g. :4422, the same port number as --listen); off when empty", EnvVars: []string{"PARADIGM_RELAY_QUIC_LISTEN"}},
			&cli.StringFlag{Name: "ports", Value: fmt.Sprintf("%d-%d", relay.DefaultLowPort, relay.DefaultHiPort), Usage: "range portaliases are assigned from", EnvVars: []string{"PARADIGM_RELAY_PORTS"}},
			&cli.StringFlag{Name: "bind", Value: relay.DefaultBind, Usage: "address portaliases listen on; anything but loopback exposes every playnode's services to the network", EnvVars: []string{"PARADIGM_RELAY_BIND"}},
			&cli.DurationFlag{Name: "keepalive", Value: 10 * time.Second, Usage: "liveness check interval both ways; a dead link is detected within 2.25 times this", EnvVars: []string{"PARADIGM_RELAY_KEEPALIVE"}},
			&cli.DurationFlag{Name: "handshake-timeout", Value: 15 * time.Second, Usage: "bound on SSH handshake, authentication and hello", EnvVars: []string{"PARADIGM_RELAY_HANDSHAKE_TIMEOUT"}},
			&cli.IntFlag{Name: "max-handshakes", Value: 128, Usage: "handshakes in progress at once", EnvVars: []string{"PARADIGM_RELAY_MAX_HANDSHAKES"}},
			&cli.IntFlag{Name: "max-unauth-per-address", Value: relay.DefaultMaxUnauthPerAddress, Usage: "connections from one source address that have not authenticated yet; more are closed at once", EnvVars: []string{"PARADIGM_RELAY_MAX_UNAUTH_PER_ADDRESS"}},
			&cli.IntFlag{Name: "max-streams-per-node", Value: relay.DefaultMaxStreamsPerNode, Usage: "connections forwarded to one playnode at once; more are closed at once", EnvVars: []string{"PARADIGM_RELAY_MAX_STREAMS_PER_NODE"}},
			&cli.IntFlag{Name: "max-streams-per-portalias", Value: relay.DefaultMaxStreamsPerPortalias, Usage: "connections forwarded through one portalias at once; more are closed at once", EnvVars: []string{"PARADIGM_RELAY_MAX_STREAMS_PER_PORTALIAS"}},
			&cli.DurationFlag{Name: "reload-interval", Value: 2 * time.Second, Usage: "how often edits to authorized_nodes and portaliases are picked up", EnvVars: []string{"PARADIGM_RELAY_RELOAD_INTERVAL"}},
			&cli.IntFlag{Name: "procs", Value: 0, DefaultText: "0: all CPUs", Usage: "CPUs running the relay's Go code at once (GOMAXPROCS), 0 for all", EnvVars: []string{"PARADIGM_RELAY_PROCS"}},
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
			r, err := relay.New(relay.Config{
				DataDir:          c.String("data"),
				Listen:           c.String("listen"),
				QUICListen:       c.String("quic-listen"),
				PortLow:          low,
				PortHigh:         high,
				Bind:             c.String("bind"),
				Keepalive:        c.Duration("keepalive"),
				HandshakeTimeout: c.Duration("handshake-timeout"),
				MaxHandshakes:    c.Int("max-handshakes"),
				ReloadInterval:   c.Duration("reload-interval"),
				Logger:           log,

				MaxUnauthPerAddress:    c.Int("max-unauth-per-address"),
				MaxStreamsPerNode:      c.Int("max-streams-per-node"),
				MaxStreamsPerPortalias: c.Int("max-streams-per-portalias"),
			})
			if err != nil {
				return err
			}
			return r.Run(c.Context)
		},
	}
}

func authorize(c *cli.Context) error {
	if c.NArg() != 2 {
		return errors.New("authorize takes NAME and PUBKEY, e.g. authorize signage-042 \"$(cat node.key.pub)\"")
	}
	name, arg := c.Args().Get(0), c.Args().Get(1)
	key, comment, err := identity.ParsePublic(arg)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(c.String("data"), 0o700); err != nil {
		return fmt.Errorf("create data folder: %w", err)
	}
	err = relay.Authorize(filepath.Join(c.String("data"), relay.AuthorizedFile), name, key, comment)
	if errors.Is(err, relay.ErrAlreadyAuthorized) {
		fmt.Fprintln(c.App.Writer, err)
		return nil
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "authorized playnode %s with key %s\n", name, identity.Fingerprint(key))
	return nil
}

func fingerprint(c *cli.Context) error {
	if err := os.MkdirAll(c.String("data"), 0o700); err != nil {
		return fmt.Errorf("create data folder: %w", err)
	}
	key, err := identity.LoadOrCreate(filepath.Join(c.String("data"), relay.HostKeyFile), "paradigm-relay")
	if err != nil {
		return err
	}
	fmt.Fprintln(c.App.Writer, identity.Fingerprint(key.PublicKey()))
	return nil
}

func list(c *cli.Context) error {
	rows, running, err := relay.List(c.String("data"))
	if err != nil {
		return err
	}
	if c.Bool("json") {
		if rows == nil {
			rows = []relay.Row{}
		}
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	w := tabwriter.NewWriter(c.App.Writer, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "PLAYNODE\tSERVICE\tSERVICE PORT\tPORTALIAS\tONLINE\tLAST SEEN")
	for _, r := range rows {
		port, online, seen := "-", "no", "never"
		if r.ServicePort != 0 {
			port = strconv.Itoa(int(r.ServicePort))
		}
		if r.Online {
			online, seen = "yes", "now"
		} else if !r.LastSeen.IsZero() {
			seen = r.LastSeen.Local().Format(time.DateTime)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\n", r.Playnode, r.Service, port, r.Portalias, online, seen)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if !running {
		fmt.Fprintln(c.App.ErrWriter, "(no relay is running on this data folder: every playnode is shown offline)")
	}
	return nil
}

func aliasCommand() *cli.Command {
	return &cli.Command{
		Name:  "alias",
		Usage: "pin, move or remove portaliases (a running relay applies the change within its reload interval)",
		Subcommands: []*cli.Command{
			{
				Name:      "set",
				Usage:     "pin or move a playnode service's portalias",
				ArgsUsage: "PLAYNODE SERVICE PORTALIAS",
				Flags:     []cli.Flag{dataFlag},
				Action: func(c *cli.Context) error {
					if c.NArg() != 3 {
						return errors.New("alias set takes PLAYNODE SERVICE PORTALIAS")
					}
					a := store.Assignment{Playnode: c.Args().Get(0), Service: c.Args().Get(1)}
					port, err := strconv.ParseUint(c.Args().Get(2), 10, 16)
					if err != nil || port == 0 {
						return fmt.Errorf("portalias %q is not a port number (1-65535)", c.Args().Get(2))
					}
					a.Portalias = uint16(port)
					if err := proto.ValidateName("playnode", a.Playnode); err != nil {
						return err
					}
					if err := proto.ValidateName("service", a.Service); err != nil {
						return err
					}
					f := &store.File{Path: filepath.Join(c.String("data"), relay.PortaliasFile)}
					if _, err := f.Update(func(t *store.Table) error { return t.Set(a) }); err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "%s %s -> portalias %d\n", a.Playnode, a.Service, a.Portalias)
					return nil
				},
			},
			{
				Name:      "rm",
				Usage:     "remove a playnode service's portalias, or all of a playnode's",
				ArgsUsage: "PLAYNODE [SERVICE]",
				Flags:     []cli.Flag{dataFlag},
				Action: func(c *cli.Context) error {
					if c.NArg() < 1 || c.NArg() > 2 {
						return errors.New("alias rm takes PLAYNODE [SERVICE]")
					}
					playnode, service := c.Args().Get(0), c.Args().Get(1)
					removed := 0
					f := &store.File{Path: filepath.Join(c.String("data"), relay.PortaliasFile)}
					_, err := f.Update(func(t *store.Table) error {
						if service == "" {
							removed = t.RemovePlaynode(playnode)
						} else if t.Remove(playnode, service) {
							removed = 1
						}
						return nil
					})
					if err != nil {
						return err
					}
					if removed == 0 {
						if service == "" {
							return fmt.Errorf("playnode %s has no portalias", playnode)
						}
						return fmt.Errorf("playnode %s has no portalias for service %s", playnode, service)
					}
					fmt.Fprintf(c.App.Writer, "removed %d portalias(es) of %s\n", removed, playnode)
					return nil
				},
			},
		},
	}
}
