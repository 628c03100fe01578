package relaycli

import (
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"paradigm/internal/admin"
	"paradigm/internal/relay"
	"paradigm/internal/store"
)

// The commands that read or edit the data folder's keys and portaliases.

// Authorize is `paradigm-relay authorize NAME PUBKEY`.
func Authorize() *cli.Command {
	return &cli.Command{
		Name:      "authorize",
		Usage:     "bind a playnode's public key to its name in the authorized-nodes file",
		ArgsUsage: "NAME PUBKEY (the public key line, quoted, or a .pub file)",
		Action: func(c *cli.Context) error {
			if c.NArg() != 2 {
				return errors.New("authorize takes NAME and PUBKEY, e.g. authorize signage-042 \"$(cat node.key.pub)\"")
			}
			var msg string
			err := withSite(c, func(site relay.Site) (err error) {
				msg, err = site.AuthorizeNode(c.Args().Get(0), c.Args().Get(1))
				return err
			})
			return printed(c, msg, err)
		},
	}
}

// Fingerprint is `paradigm-relay fingerprint`.
func Fingerprint() *cli.Command {
	return &cli.Command{
		Name:  "fingerprint",
		Usage: "print the relay's host key fingerprint (creating the key if there is none yet)",
		Action: func(c *cli.Context) error {
			fp, err := relay.Fingerprint(c.String("data"))
			return printed(c, fp, err)
		},
	}
}

// SSHConfig is `paradigm-relay ssh-config`.
func SSHConfig() *cli.Command {
	return &cli.Command{
		Name:      "ssh-config",
		Usage:     "print an ssh_config Host block for every playnode with an ssh service, between marker lines",
		ArgsUsage: "[PLAYNODE-PREFIX...]",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "proxy-jump", Usage: "add ProxyJump USER@SERVER, so that `ssh PLAYNODE` works from another machine", EnvVars: []string{"PARADIGM_RELAY_PROXY_JUMP"}},
			adminTokenFlag(nil),
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

// Ls is `paradigm-relay ls`.
func Ls() *cli.Command {
	return &cli.Command{
		Name:      "ls",
		Usage:     "list portaliases: playnode, service, service port, portalias, online, last seen",
		ArgsUsage: "[PLAYNODE-PREFIX...]",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print a JSON array", EnvVars: []string{"PARADIGM_RELAY_LS_JSON"}},
			&cli.BoolFlag{Name: "online", Usage: "only services reachable now"},
			&cli.BoolFlag{Name: "offline", Usage: "only services not reachable now"},
			adminTokenFlag(nil),
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

// Alias is `paradigm-relay alias` and its subcommands set, prune and rm.
func Alias() *cli.Command {
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
					err = withStore(c, func(st store.Store) error { return relay.AliasSet(c.Context, c.String("data"), st, a, c.Bool("force")) })
					return printed(c, fmt.Sprintf("%s %s -> portalias %d", a.Playnode, a.Service, a.Portalias), err)
				},
			},
			{
				Name:      "prune",
				Usage:     "remove stale portaliases: of services the playnode's last hello did not register",
				ArgsUsage: "[PLAYNODE...] (all playnodes when none)",
				Action: func(c *cli.Context) error {
					var removed []store.Assignment
					err := withStore(c, func(st store.Store) (err error) {
						removed, err = relay.AliasPrune(c.Context, c.String("data"), st, c.Args().Slice())
						return err
					})
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
					var n int
					err := withStore(c, func(st store.Store) (err error) {
						n, err = relay.AliasRemove(c.Context, c.String("data"), st, playnode, c.Args().Get(1))
						return err
					})
					return printed(c, fmt.Sprintf("removed %d portalias(es) of %s", n, playnode), err)
				},
			},
		},
	}
}
