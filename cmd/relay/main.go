// Command paradigm-relay is the server side of paradigm: it accepts playnodes
// on one port and exposes each of their services on this server's loopback
// at a stable portalias. It only assembles the commands of
// internal/relaycli (their flags and actions); internal/relay does the work.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"paradigm/internal/cliflags"
	"paradigm/internal/relaycli"
)

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
			relaycli.Serve(),
			relaycli.Authorize(),
			relaycli.Fingerprint(),
			relaycli.Ls(),
			relaycli.SSHConfig(),
			relaycli.Alias(),
			relaycli.Token(),
			relaycli.Pending(),
			relaycli.Approve(),
			relaycli.Reject(),
			relaycli.Nodes(),
			relaycli.Revoke(),
			relaycli.Hostkey(),
			relaycli.Demo(),
		},
	}
	// --log-level, --log-format, --data and the --store flags work before
	// the command and after it.
	cliflags.Global(app, relaycli.GlobalFlags)
	return app
}
