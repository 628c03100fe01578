package relaycli

import (
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"paradigm/internal/admin"
	"paradigm/internal/cliflags"
	"paradigm/internal/relay"
	"paradigm/internal/store/etcdstore/etcdtest"
)

// parseServe runs the flags of serve on args (global flags included, on
// either side of the command) and returns what configs makes of them,
// without starting a relay.
func parseServe(t *testing.T, args ...string) (relay.Config, admin.Config, error) {
	t.Helper()
	var f serveFlags
	var rc relay.Config
	var ac admin.Config
	var err error
	app := &cli.App{
		Name: "paradigm-relay", Writer: io.Discard, ErrWriter: io.Discard,
		Commands: []*cli.Command{{Name: "serve", Flags: f.flags(), Action: func(c *cli.Context) error {
			rc, ac, err = f.configs(c)
			return nil
		}}},
	}
	cliflags.Global(app, GlobalFlags)
	if runErr := app.Run(append([]string{"paradigm-relay"}, args...)); runErr != nil {
		t.Fatalf("%q: %v", args, runErr)
	}
	return rc, ac, err
}

// TestServeDefaults: with no flag, serve's configs hold the defaults
// internal/relay and internal/admin declare.
func TestServeDefaults(t *testing.T) {
	rc, ac, err := parseServe(t, "serve")
	if err != nil {
		t.Fatal(err)
	}
	want := relay.Config{
		DataDir: relay.DefaultDataDir, Listen: relay.DefaultListen, PortLow: relay.DefaultLowPort, PortHigh: relay.DefaultHiPort,
		Bind: relay.DefaultBind, Keepalive: relay.DefaultKeepalive, HandshakeTimeout: relay.DefaultHandshakeTimeout,
		FirstBytesTimeout: relay.DefaultFirstBytesTimeout, MaxHandshakes: relay.DefaultMaxHandshakes,
		MaxUnauthPerAddress: relay.DefaultMaxUnauthPerAddress, MaxStreamsPerNode: relay.DefaultMaxStreamsPerNode,
		MaxStreamsPerPortalias: relay.DefaultMaxStreamsPerPortalias, PeerLogLines: relay.DefaultPeerLogLines,
		MaxPortaliasesPerNode: relay.DefaultMaxPortaliasesPerNode, ReloadInterval: relay.DefaultReloadInterval,
		EnrollPerMinute: relay.DefaultEnrollPerMinute, MaxPending: relay.DefaultMaxPending,
	}
	if rc != want {
		t.Errorf("relay config:\ngot  %+v\nwant %+v", rc, want)
	}
	if ac.Listen != admin.DefaultListen || ac.MaxConns != admin.DefaultMaxConns || ac.MaxSSEClients != admin.DefaultMaxSSEClients ||
		ac.EventRing != admin.DefaultEventRing || ac.WebhookGrace != admin.DefaultWebhookGrace || ac.WebhookQueue != admin.DefaultWebhookQueue ||
		ac.TokenFile != "" || ac.TLSCert != "" || ac.TLSKey != "" || ac.WebhookSecretFile != "" || ac.Webhooks != nil {
		t.Errorf("admin config: got %+v, want the admin.Default* values", ac)
	}
}

// TestServeFlags: flags, environment variables and global flags given
// before the command each reach their field.
func TestServeFlags(t *testing.T) {
	t.Setenv("PARADIGM_RELAY_MAX_PENDING", "9")
	t.Setenv("PARADIGM_RELAY_WEBHOOK_GRACE", "1m")
	t.Setenv("PARADIGM_RELAY_ADMIN_TLS_KEY", "k.pem")
	rc, ac, err := parseServe(t, "--data", "/srv/relay", "serve",
		"--listen", "127.0.0.1:1", "--quic-listen", ":2", "--ports", "100-200", "--bind", "::1",
		"--keepalive", "3s", "--handshake-timeout", "4s", "--first-bytes-timeout", "1s", "--max-handshakes", "7",
		"--max-unauth-per-address", "2", "--max-streams-per-node", "11", "--max-streams-per-portalias", "12",
		"--peer-log-lines", "5", "--max-portaliases-per-node", "6", "--reload-interval", "9s", "--enroll-per-minute", "13",
		"--admin", "", "--admin-token-file", "tok", "--admin-tls-cert", "c.pem", "--admin-max-conns", "3",
		"--admin-max-sse-clients", "4", "--admin-event-ring", "5", "--webhook", "http://a", "--webhook", "http://b",
		"--webhook-secret", "s", "--webhook-queue", "8")
	if err != nil {
		t.Fatal(err)
	}
	want := relay.Config{
		DataDir: "/srv/relay", Listen: "127.0.0.1:1", QUICListen: ":2", PortLow: 100, PortHigh: 200, Bind: "::1",
		Keepalive: 3 * time.Second, HandshakeTimeout: 4 * time.Second, FirstBytesTimeout: time.Second, MaxHandshakes: 7,
		MaxUnauthPerAddress: 2, MaxStreamsPerNode: 11, MaxStreamsPerPortalias: 12, PeerLogLines: 5,
		MaxPortaliasesPerNode: 6, ReloadInterval: 9 * time.Second, EnrollPerMinute: 13, MaxPending: 9,
	}
	if rc != want {
		t.Errorf("relay config:\ngot  %+v\nwant %+v", rc, want)
	}
	if ac.Listen != "" || ac.TokenFile != "tok" || ac.TLSCert != "c.pem" || ac.TLSKey != "k.pem" || ac.MaxConns != 3 ||
		ac.MaxSSEClients != 4 || ac.EventRing != 5 || !slices.Equal(ac.Webhooks, []string{"http://a", "http://b"}) ||
		ac.WebhookSecretFile != "s" || ac.WebhookGrace != time.Minute || ac.WebhookQueue != 8 {
		t.Errorf("admin config: got %+v", ac)
	}
}

// TestServeFlagErrors: a bad value is refused with the flag's name.
func TestServeFlagErrors(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--ports", "200-100"}, "--ports"},
		{[]string{"serve", "--ports", "1-70000"}, "--ports"},
		{[]string{"--store-ca", "ca.pem", "serve"}, "--store"},
		{[]string{"serve", "--store", "http://127.0.0.1:2379/p"}, "store"},
	} {
		_, _, err := parseServe(t, tt.args...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: got error %v, want one naming %s", tt.args, err, tt.want)
		}
	}
}

// TestStoreFlagsGlobal: the --store flags work before and after the
// command, and the operator's commands act on the shared store they name
// (a real etcd): a token created with the flags before the command is
// listed with them after it; the data folder keeps no file of it.
func TestStoreFlagsGlobal(t *testing.T) {
	e := etcdtest.Start(t)
	url := "etcd://" + e.Client + "/flags"
	data := t.TempDir()
	run := func(args ...string) (string, error) {
		var out strings.Builder
		app := &cli.App{Name: "paradigm-relay", Writer: &out, ErrWriter: io.Discard, Commands: []*cli.Command{Nodes(), Token()}}
		cliflags.Global(app, GlobalFlags)
		err := app.Run(append([]string{"paradigm-relay", "--data", data}, args...))
		return out.String(), err
	}
	if _, err := run("--store", url, "token", "create", "--comment", "shared"); err != nil {
		t.Fatal(err)
	}
	out, err := run("token", "ls", "--store", url)
	if err != nil || !strings.Contains(out, "shared") {
		t.Fatalf("token ls --store after the command: %q, %v; want the token created through the store", out, err)
	}
	if out, err := run("token", "ls"); err != nil || strings.Contains(out, "shared") {
		t.Fatalf("token ls without --store: %q, %v; want the data folder's own, empty, list", out, err)
	}
	if _, err := run("nodes", "--store", url); err != nil {
		t.Fatal(err)
	}
	_, err = run("nodes", "--store", url, "--store-ca", "ca.pem", "--store-cert", "c.pem", "--store-key", "k.pem")
	if err == nil || !strings.Contains(err.Error(), "ca.pem") {
		t.Fatalf("nodes with a missing --store-ca: %v, want an error naming ca.pem", err)
	}
}
