// Package demo runs the whole product on loopback with no setup: a relay in
// a temporary data folder, a playnode authorized for it, and a sample HTTP
// service on the playnode, then fetches the service through its portalias.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"paradigm/internal/identity"
	"paradigm/internal/node"
	"paradigm/internal/relay"
)

// Playnode is the demo playnode's name.
const Playnode = "demo-playnode"

// onlineTimeout bounds the wait for the demo playnode's portalias.
const onlineTimeout = 30 * time.Second

// Config is what the demo command's flags set.
type Config struct {
	PortLow, PortHigh uint16    // the portalias range
	Once              bool      // exit after the first fetch
	Out               io.Writer // where the portalias and the fetched page are printed
	Logger            *slog.Logger
}

// Run runs the demo until ctx is cancelled (or after one fetch with Once).
func Run(ctx context.Context, cfg Config) error {
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
		fmt.Fprintf(w, "hello from playnode %s, through paradigm\n", Playnode)
	}), ReadHeaderTimeout: 10 * time.Second}
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { srv.Serve(web) })
	defer srv.Close()

	keyFile := filepath.Join(dir, "node.key")
	key, err := identity.GenerateKey(keyFile, Playnode)
	if err != nil {
		return err
	}
	dataDir := filepath.Join(dir, "relay")
	if err := os.Mkdir(dataDir, 0o700); err != nil {
		return err
	}
	if err := relay.Authorize(filepath.Join(dataDir, relay.AuthorizedFile), Playnode, key.PublicKey(), ""); err != nil {
		return err
	}
	r, err := relay.New(relay.Config{DataDir: dataDir, Listen: "127.0.0.1:0", PortLow: cfg.PortLow, PortHigh: cfg.PortHigh, Logger: cfg.Logger.With("role", "relay")})
	if err != nil {
		return err
	}
	n, err := node.New(node.Config{
		Relay:       r.Addr().String(),
		Fingerprint: identity.Fingerprint(r.HostKey()),
		KeyFile:     keyFile,
		Name:        Playnode,
		Services:    []node.Service{{Name: "web", Addr: web.Addr().String()}},
		Logger:      cfg.Logger.With("role", "node"),
	})
	if err != nil {
		r.Close()
		return err
	}
	snap, sub := r.Subscribe(64)
	defer sub.Close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	for _, run := range []func(context.Context) error{r.Run, n.Run} {
		wg.Go(func() { errc <- run(ctx) })
	}
	defer cancel() // before wg.Wait

	port, err := waitPortalias(ctx, r, snap, sub, "web", errc)
	if err != nil {
		return err
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	body, err := fetch(url)
	if err != nil {
		return fmt.Errorf("fetch %s through the portalias: %w", url, err)
	}
	fmt.Fprintf(cfg.Out, "playnode %s's service web (%s) is at portalias %d on this machine's loopback.\n", Playnode, web.Addr(), port)
	fmt.Fprintf(cfg.Out, "GET %s -> %s", url, body)
	if cfg.Once {
		return nil
	}
	fmt.Fprintf(cfg.Out, "Try it: curl %s   (Ctrl-C stops the demo)\n", url)
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		return err
	}
}

// waitPortalias waits, on the relay's events, until the demo playnode
// serves service and returns its portalias.
func waitPortalias(ctx context.Context, r *relay.Relay, snap relay.Snapshot, sub *relay.Subscription, service string, errc <-chan error) (uint16, error) {
	deadline := time.NewTimer(onlineTimeout)
	defer deadline.Stop()
	for {
		if p, ok := snap.Playnode(Playnode); ok {
			for _, s := range p.Services {
				if s.Name == service && s.State == relay.StateOnline {
					return s.Portalias, nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case err := <-errc:
			return 0, fmt.Errorf("demo stopped early: %w", err)
		case <-deadline.C:
			return 0, fmt.Errorf("the demo playnode did not come online within %v (see the log above)", onlineTimeout)
		case _, ok := <-sub.C:
			if !ok {
				return 0, errors.New("the relay stopped")
			}
			snap = r.Snapshot()
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
