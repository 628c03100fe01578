package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"paradigm/internal/cliflags"
	"paradigm/internal/identity"
	"paradigm/internal/node"
	"paradigm/internal/relay"
)

const demoPlaynode = "demo-playnode"

// demoCommand runs the whole product on loopback with no setup: a relay in a
// temporary data folder, a playnode authorized for it, and a sample HTTP
// service on the playnode, then fetches the service through its portalias.
func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "run a relay and a playnode on loopback with a sample web service, and print the portalias to try",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "ports", Value: fmt.Sprintf("%d-%d", relay.DefaultLowPort, relay.DefaultHiPort), Usage: "range portaliases are assigned from", EnvVars: []string{"PARADIGM_RELAY_DEMO_PORTS"}},
			&cli.BoolFlag{Name: "once", Usage: "exit after fetching the sample service once through its portalias", EnvVars: []string{"PARADIGM_RELAY_DEMO_ONCE"}},
		},
		Action: demo,
	}
}

func demo(c *cli.Context) error {
	log, err := cliflags.New(c, os.Stderr)
	if err != nil {
		return err
	}
	low, high, err := relay.ParsePortRange(c.String("ports"))
	if err != nil {
		return fmt.Errorf("--ports: %w", err)
	}
	dir, err := os.MkdirTemp("", "paradigm-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	// The playnode's sample service: a web page on its own loopback.
	web, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "hello from playnode %s, through paradigm\n", demoPlaynode)
	}), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(web)
	defer srv.Close()

	keyFile := filepath.Join(dir, "node.key")
	key, err := identity.GenerateKey(keyFile, demoPlaynode)
	if err != nil {
		return err
	}
	dataDir := filepath.Join(dir, "relay")
	if err := os.Mkdir(dataDir, 0o700); err != nil {
		return err
	}
	if err := relay.Authorize(filepath.Join(dataDir, relay.AuthorizedFile), demoPlaynode, key.PublicKey(), ""); err != nil {
		return err
	}
	r, err := relay.New(relay.Config{DataDir: dataDir, Listen: "127.0.0.1:0", PortLow: low, PortHigh: high, Logger: log.With("role", "relay")})
	if err != nil {
		return err
	}
	n, err := node.New(node.Config{
		Relay:       r.Addr().String(),
		Fingerprint: identity.Fingerprint(r.HostKey()),
		KeyFile:     keyFile,
		Name:        demoPlaynode,
		Services:    []node.Service{{Name: "web", Addr: web.Addr().String()}},
		Logger:      log.With("role", "node"),
	})
	if err != nil {
		r.Close()
		return err
	}

	ctx, cancel := context.WithCancel(c.Context)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	for _, run := range []func(context.Context) error{r.Run, n.Run} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- run(ctx)
		}()
	}
	defer wg.Wait()
	defer cancel()

	port, err := waitPortalias(ctx, r, "web", errc)
	if err != nil {
		return err
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	body, err := fetch(url)
	if err != nil {
		return fmt.Errorf("fetch %s through the portalias: %w", url, err)
	}
	fmt.Fprintf(c.App.Writer, "playnode %s's service web (%s) is at portalias %d on this machine's loopback.\n", demoPlaynode, web.Addr(), port)
	fmt.Fprintf(c.App.Writer, "GET %s -> %s", url, body)
	if c.Bool("once") {
		return nil
	}
	fmt.Fprintf(c.App.Writer, "Try it: curl %s   (Ctrl-C stops the demo)\n", url)
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		return err
	}
}

// waitPortalias waits until the demo playnode is online and returns the
// portalias of service.
func waitPortalias(ctx context.Context, r *relay.Relay, service string, errc <-chan error) (uint16, error) {
	deadline := time.After(30 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if ps, ok := r.Online(demoPlaynode); ok {
			for _, p := range ps {
				if p.Service == service {
					return p.Portalias, nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case err := <-errc:
			return 0, fmt.Errorf("demo stopped early: %w", err)
		case <-deadline:
			return 0, errors.New("the demo playnode did not come online within 30s (see the log above)")
		case <-tick.C:
		}
	}
}

func fetch(url string) (string, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return string(body), err
}
