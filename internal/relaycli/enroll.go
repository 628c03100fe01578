package relaycli

import (
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"paradigm/internal/relay"
)

// The enrollment and lifecycle commands: internal/relay does the work.

// Token is `paradigm-relay token` and its subcommands create, ls and rm.
func Token() *cli.Command {
	return &cli.Command{
		Name:  "token",
		Usage: "enrollment tokens: let new playnodes bind their own key",
		Subcommands: []*cli.Command{
			{
				Name:  "create",
				Usage: "make a token; it is printed once, alone on the last line, and only its hash is kept",
				Flags: []cli.Flag{
					&cli.IntFlag{Name: "uses", Value: 1, Usage: "how many playnodes it may enroll", EnvVars: []string{"PARADIGM_RELAY_TOKEN_USES"}},
					&cli.DurationFlag{Name: "ttl", Value: 24 * time.Hour, Usage: "how long it is valid; 0 for no expiry", EnvVars: []string{"PARADIGM_RELAY_TOKEN_TTL"}},
					&cli.StringFlag{Name: "names", Value: "*", Usage: "glob the playnode names it enrolls must match, e.g. signage-*", EnvVars: []string{"PARADIGM_RELAY_TOKEN_NAMES"}},
					&cli.BoolFlag{Name: "approve", Usage: "hold each enrollment in the pending list until paradigm-relay approve NAME", EnvVars: []string{"PARADIGM_RELAY_TOKEN_APPROVE"}},
					&cli.StringFlag{Name: "comment", Usage: "free text kept beside the token", EnvVars: []string{"PARADIGM_RELAY_TOKEN_COMMENT"}},
				},
				Action: func(c *cli.Context) error {
					if c.Args().Present() {
						return fmt.Errorf("token create takes no arguments, got %q", c.Args().Slice())
					}
					if c.Int("uses") < 1 {
						return fmt.Errorf("--uses %d: want 1 or more", c.Int("uses"))
					}
					var tok string
					var t relay.Token
					err := withSite(c, func(site relay.Site) (err error) {
						tok, t, err = site.CreateToken(relay.TokenOptions{
							Uses: c.Int("uses"), TTL: c.Duration("ttl"), Names: c.String("names"), Approve: c.Bool("approve"), Comment: c.String("comment"),
						}, time.Now())
						return err
					})
					if err != nil {
						return err
					}
					exp := "never"
					if !t.Expires.IsZero() {
						exp = t.Expires.Format(time.RFC3339)
					}
					fmt.Fprintf(c.App.ErrWriter, "token %s: %d use(s), expires %s, names %s, approve %v (shown once, keep it secret)\n", t.ID, t.Uses, exp, t.Names, t.Approve)
					fmt.Fprintln(c.App.Writer, tok)
					return nil
				},
			},
			{
				Name:  "ls",
				Usage: "list tokens (id, uses left, expiry, names, approve, comment)",
				Action: func(c *cli.Context) error {
					var ts []relay.Token
					err := withSite(c, func(site relay.Site) (err error) {
						ts, err = site.ListTokens()
						return err
					})
					if err != nil {
						return err
					}
					tw := tabwriter.NewWriter(c.App.Writer, 0, 8, 2, ' ', 0)
					fmt.Fprintln(tw, "ID\tUSES\tEXPIRES\tNAMES\tAPPROVE\tCREATED\tCOMMENT")
					for _, t := range ts {
						exp := "never"
						if !t.Expires.IsZero() {
							exp = t.Expires.Format(time.RFC3339)
							if !time.Now().Before(t.Expires) {
								exp += " (expired)"
							}
						}
						fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%v\t%s\t%s\n", t.ID, t.Uses, exp, t.Names, t.Approve, t.Created.Format(time.RFC3339), t.Comment)
					}
					return tw.Flush()
				},
			},
			{
				Name:      "rm",
				Usage:     "remove a token; playnodes it enrolled stay enrolled",
				ArgsUsage: "ID",
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return errors.New("token rm takes the token's ID (paradigm-relay token ls)")
					}
					err := withSite(c, func(site relay.Site) error { return site.RemoveToken(c.Args().First()) })
					return printed(c, "removed token "+c.Args().First(), err)
				},
			},
		},
	}
}

// Pending is `paradigm-relay pending`.
func Pending() *cli.Command {
	return &cli.Command{
		Name:  "pending",
		Usage: "list enrollments waiting for approval, and rejected keys",
		Action: func(c *cli.Context) error {
			var ps []relay.PendingNode
			err := withSite(c, func(site relay.Site) (err error) {
				ps, err = site.ListPending()
				return err
			})
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(c.App.Writer, 0, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "PLAYNODE\tSTATE\tKEY\tTOKEN\tFROM\tAT")
			for _, p := range ps {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.Playnode, p.State, p.Fingerprint, p.Token, p.From, p.At.Format(time.RFC3339))
			}
			return tw.Flush()
		},
	}
}

// nameCommand is a command that takes one playnode NAME and prints what fn
// returns.
func nameCommand(name, usage string, fn func(site relay.Site, name string) (string, error)) *cli.Command {
	return &cli.Command{
		Name:      name,
		Usage:     usage,
		ArgsUsage: "NAME",
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("%s takes one playnode NAME", name)
			}
			var msg string
			err := withSite(c, func(site relay.Site) (err error) {
				msg, err = fn(site, c.Args().First())
				return err
			})
			return printed(c, msg, err)
		},
	}
}

// Approve is `paradigm-relay approve NAME`.
func Approve() *cli.Command {
	return nameCommand("approve", "admit a pending enrollment: its key is bound to the name", relay.Site.ApprovePending)
}

// Reject is `paradigm-relay reject NAME`.
func Reject() *cli.Command {
	return nameCommand("reject", "refuse a pending enrollment; that key stays refused", relay.Site.RejectPending)
}

// Revoke is `paradigm-relay revoke NAME`.
func Revoke() *cli.Command {
	return nameCommand("revoke", "remove a playnode's key binding; a running relay disconnects it", relay.Site.Revoke)
}

// Nodes is `paradigm-relay nodes`.
func Nodes() *cli.Command {
	return &cli.Command{
		Name:  "nodes",
		Usage: "list authorized playnodes, also those never connected, with how each was enrolled",
		Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print a JSON array", EnvVars: []string{"PARADIGM_RELAY_NODES_JSON"}}},
		Action: func(c *cli.Context) error {
			var rows []relay.NodeRow
			err := withSite(c, func(site relay.Site) (err error) {
				rows, err = site.Nodes()
				return err
			})
			if err != nil {
				return err
			}
			return relay.WriteNodes(c.App.Writer, rows, c.Bool("json"))
		},
	}
}

// Hostkey is `paradigm-relay hostkey` and its subcommands next and promote.
func Hostkey() *cli.Command {
	return &cli.Command{
		Name:  "hostkey",
		Usage: "rotate the relay's host key without losing a playnode",
		Subcommands: []*cli.Command{
			{
				Name:  "next",
				Usage: "create the next host key (if none) and print its fingerprint; connected playnodes learn it",
				Action: func(c *cli.Context) error {
					fp, err := relay.NextHostKey(c.String("data"))
					return printed(c, fp, err)
				},
			},
			{
				Name:  "promote",
				Usage: "make the next host key the relay's host key (then restart the relay)",
				Action: func(c *cli.Context) error {
					msg, err := relay.PromoteHostKey(c.String("data"))
					return printed(c, msg, err)
				},
			},
		},
	}
}
