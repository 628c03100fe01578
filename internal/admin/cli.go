package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"paradigm/internal/relay"
)

// Serve runs relay r with its admin endpoint (cfg.Relay is set to r), or
// without one when cfg.Listen is empty (--admin ""): what
// `paradigm-relay serve` runs. It closes r if the endpoint cannot start.
func Serve(ctx context.Context, r *relay.Relay, cfg Config) error {
	if cfg.Listen == "" {
		return r.Run(ctx)
	}
	cfg.Relay = r
	a, err := New(cfg)
	if err != nil {
		r.Close()
		return err
	}
	return RunWith(ctx, r, a)
}

// listTimeout bounds asking a running relay's admin endpoint for ls.
const listTimeout = 5 * time.Second

// List returns the rows of `paradigm-relay ls`: from the admin endpoint of
// the relay running on dataDir when it answers (its live state, no lag),
// from the files otherwise (relay.List). token is sent as a bearer token
// when not empty.
func List(ctx context.Context, dataDir, token string) (rows []relay.Row, running bool, err error) {
	if rows, err := listLive(ctx, dataDir, token); err == nil {
		return rows, true, nil
	}
	return relay.List(dataDir)
}

func listLive(ctx context.Context, dataDir, token string) ([]relay.Row, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, AddrFile))
	if err != nil {
		return nil, err
	}
	var doc addrDoc
	if err := json.Unmarshal(b, &doc); err != nil || doc.URL == "" {
		return nil, fmt.Errorf("%s: no url", AddrFile)
	}
	ctx, cancel := context.WithTimeout(ctx, listTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", doc.URL+"/api/v1/playnodes", nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("admin endpoint: %s", resp.Status)
	}
	var list PlaynodeList
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&list); err != nil {
		return nil, err
	}
	return Rows(list), nil
}

// Rows turns a playnode list into ls rows, by playnode then service.
func Rows(list PlaynodeList) []relay.Row {
	rows := []relay.Row{}
	for _, p := range list.Playnodes {
		for _, s := range p.Services {
			row := relay.Row{Playnode: p.Name, Service: s.Name, ServicePort: s.ServicePort, Portalias: s.Portalias,
				Online: s.State == relay.StateOnline, State: s.State, LastSeen: p.LastSeen}
			if p.Online {
				row.Remote = p.Remote
			}
			if s.Portalias != 0 && list.PortHigh != 0 {
				row.OutsideRange = s.Portalias < list.PortLow || s.Portalias > list.PortHigh
			}
			rows = append(rows, row)
		}
	}
	return rows
}

// FirstToken reads the first bearer token of a token file, for the CLI to
// send; an empty path gives "".
func FirstToken(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--admin-token-file: %w", err)
	}
	for line := range strings.Lines(string(b)) {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			return line, nil
		}
	}
	return "", fmt.Errorf("--admin-token-file %s: no token in it", path)
}

// SSH config markers: a tool replaces what lies between them.
const (
	SSHConfigBegin = "# BEGIN paradigm-relay ssh-config"
	SSHConfigEnd   = "# END paradigm-relay ssh-config"
)

// WriteSSHConfig writes a Host block for every playnode with an ssh
// service that has a portalias, between the marker lines. HostKeyAlias is
// the playnode's name, so known_hosts follows the device, not a port number
// that may be reassigned.
func WriteSSHConfig(w io.Writer, rows []relay.Row, proxyJump string) error {
	if strings.ContainsAny(proxyJump, " \t\r\n\"'#") {
		return errors.New("--proxy-jump: want [USER@]HOST[:PORT], without spaces or quotes")
	}
	var b strings.Builder
	b.WriteString(SSHConfigBegin + "\n")
	for _, r := range rows {
		if r.Service != "ssh" || r.Portalias == 0 {
			continue
		}
		fmt.Fprintf(&b, "Host %s\n    HostName 127.0.0.1\n    Port %d\n    HostKeyAlias %s\n", r.Playnode, r.Portalias, r.Playnode)
		if proxyJump != "" {
			fmt.Fprintf(&b, "    ProxyJump %s\n", proxyJump)
		}
	}
	b.WriteString(SSHConfigEnd + "\n")
	_, err := io.WriteString(w, b.String())
	return err
}
