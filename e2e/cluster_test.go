package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"paradigm/internal/identity"
	"paradigm/internal/node"
	"paradigm/internal/relay"
	"paradigm/internal/store/etcdstore"
	"paradigm/internal/store/etcdstore/etcdtest"
)

// clusterRelay is one relay binary of a cluster on its own loopback
// address (127.0.0.2 upwards): --listen, --bind and --admin there, as on
// separate servers.
type clusterRelay struct {
	*relayProc
	d  *deployment
	ip string
}

// newCluster prepares n relay data folders sharing one etcd under prefix
// and one port window.
func newCluster(t *testing.T, e *etcdtest.Server, prefix string, n int) []*clusterRelay {
	t.Helper()
	var rs []*clusterRelay
	for i := range n {
		d := newDeployment(t)
		if i > 0 {
			d.low, d.high, d.ports = rs[0].d.low, rs[0].d.high, rs[0].d.ports
		}
		d.keepalive = "1s"
		ip := fmt.Sprintf("127.0.0.%d", i+2)
		d.serveArgs = []string{"--store", "etcd://" + e.Client + "/" + prefix, "--bind", ip, "--admin", ip + ":0"}
		rs = append(rs, &clusterRelay{d: d, ip: ip})
	}
	return rs
}

// start runs the relay on its address at port (0: any; a restart passes
// the port it had).
func (r *clusterRelay) start(t *testing.T, port int) {
	t.Helper()
	r.relayProc = r.d.serve(t, "ssh", net.JoinHostPort(r.ip, strconv.Itoa(port)))
}

// port is the relay's resolved playnode port.
func (r *clusterRelay) port(t *testing.T) int {
	t.Helper()
	_, p, err := net.SplitHostPort(r.addr)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return n
}

// adminURL is the relay's admin endpoint, from the admin.json it wrote.
func (r *clusterRelay) adminURL(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(r.d.data, "admin.json"))
	if err != nil {
		t.Fatalf("admin.json of %s: %v", r.ip, err)
	}
	var a struct{ URL string }
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatal(err)
	}
	return a.URL
}

// api GETs path from the relay's admin endpoint (its URL in admin.json)
// into v and returns the status code.
func (r *clusterRelay) api(t *testing.T, path string, v any) int {
	t.Helper()
	resp, err := http.Get(r.adminURL(t) + path)
	if err != nil {
		t.Fatalf("GET %s on %s: %v", path, r.ip, err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s on %s: %v", path, r.ip, err)
	}
	return resp.StatusCode
}

// metric returns the value of an unlabelled counter on r's /metrics.
func (r *clusterRelay) metric(t *testing.T, name string) float64 {
	t.Helper()
	resp, err := http.Get(r.adminURL(t) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// apiPlaynode is what the admin API says of one playnode.
type apiPlaynode struct {
	Name      string    `json:"playnode"`
	Online    bool      `json:"online"`
	Relay     string    `json:"relay"`
	Connected time.Time `json:"connected_since"`
	Services  []struct {
		Service   string `json:"service"`
		Portalias uint16 `json:"portalias"`
		State     string `json:"state"`
	} `json:"services"`
}

// playnode returns what r's admin API says of name (zero if unknown).
func (r *clusterRelay) playnode(t *testing.T, name string) apiPlaynode {
	t.Helper()
	var p apiPlaynode
	if r.api(t, "/api/v1/playnodes/"+name, &p) != http.StatusOK {
		return apiPlaynode{}
	}
	return p
}

// waitHome waits until r shows name online at home on relay home (an
// address) with its service online, and returns the portalias.
func (r *clusterRelay) waitHome(t *testing.T, name, home, service string) uint16 {
	t.Helper()
	var port uint16
	waitUntil(t, fmt.Sprintf("%s to show %s at home on %s", r.ip, name, home), func() bool {
		p := r.playnode(t, name)
		if !p.Online || p.Relay != home {
			return false
		}
		for _, s := range p.Services {
			if s.Service == service && s.State == relay.StateOnline {
				port = s.Portalias
				return true
			}
		}
		return false
	})
	return port
}

// echoAt checks that addr echoes what it is sent.
func echoAt(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	msg := "ping " + addr
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if string(got) != msg {
		return fmt.Errorf("echo through %s: got %q, want %q", addr, got, msg)
	}
	return nil
}

// portalias is the address of portalias port on relay r.
func (r *clusterRelay) portalias(port uint16) string {
	return net.JoinHostPort(r.ip, strconv.Itoa(int(port)))
}

// TestClusterEtcdOutage: etcd killed for 30 s under two relay binaries.
// No session drops (the playnode's connected-since does not change), its
// portalias answers through both relays all along, /readyz says the store
// is unreachable; a new playnode, which needs a new portalias, is admitted
// once etcd is back, and nothing assigned before is lost or moved.
func TestClusterEtcdOutage(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t)
	rs := newCluster(t, e, "outage", 2)
	a, b := rs[0], rs[1]
	piKey, lateKey := a.d.keygen(t, "pi"), a.d.keygen(t, "late")
	for name, key := range map[string]string{"pi": piKey, "late": lateKey} {
		mustRun(t, relayBin, "authorize", "--data", a.d.data, "--store", "etcd://"+e.Client+"/outage", name, key+".pub")
	}
	a.start(t, 0)
	b.start(t, 0)
	echo := portOf(fmt.Sprint("127.0.0.1:", startEcho(t)))
	a.d.runNode(t, a.relayProc, "pi", piKey, "echo="+echo)
	port := b.waitHome(t, "pi", a.addr, "echo")
	before := a.playnode(t, "pi")

	e.Kill()
	killed := time.Now()
	var rd struct {
		Ready        bool   `json:"ready"`
		ClusterStore string `json:"cluster_store"`
	}
	waitUntil(t, "A's /readyz to say the cluster store is unreachable", func() bool {
		code := a.api(t, "/readyz", &rd)
		return code == http.StatusServiceUnavailable && !rd.Ready && rd.ClusterStore == "unreachable"
	})
	b.d.runNode(t, b.relayProc, "late", lateKey, "echo="+echo)
	for time.Since(killed) < 30*time.Second {
		for _, r := range rs {
			if err := echoAt(r.portalias(port)); err != nil {
				t.Fatalf("%v after etcd was killed: %v", time.Since(killed).Round(time.Millisecond), err)
			}
		}
		time.Sleep(time.Second)
	}
	if p := b.playnode(t, "late"); p.Online {
		t.Errorf("late is online while etcd is down: %+v", p)
	}
	e.Restart()
	restarted := time.Now()
	latePort := a.waitHome(t, "late", b.addr, "echo")
	t.Logf("late online through A %v after etcd's restart", time.Since(restarted).Round(time.Millisecond))
	if latePort == port {
		t.Errorf("late got pi's portalias %d", port)
	}
	after := a.playnode(t, "pi")
	if !after.Online || !after.Connected.Equal(before.Connected) {
		t.Errorf("pi on A after the outage: online %v since %v; want the session of %v, unbroken", after.Online, after.Connected, before.Connected)
	}
	for _, r := range rs {
		if got := r.waitHome(t, "pi", a.addr, "echo"); got != port {
			t.Errorf("%s: pi's portalias %d after the outage, want %d", r.ip, got, port)
		}
		for _, p := range []uint16{port, latePort} {
			if err := echoAt(r.portalias(p)); err != nil {
				t.Error(err)
			}
		}
	}
	waitUntil(t, "A's /readyz to say ready again", func() bool {
		return a.api(t, "/readyz", &rd) == http.StatusOK && rd.ClusterStore == "ok"
	})
}

// TestClusterConcurrentAssign: two relay binaries assign ports for 200 new
// playnodes at the same time (100 dial each, in-process nodes); no port is
// given twice, and both relays agree on every assignment.
func TestClusterConcurrentAssign(t *testing.T) {
	t.Parallel()
	const n = 200
	e := etcdtest.Start(t)
	rs := newCluster(t, e, "assign", 2)
	for _, r := range rs {
		r.d.low, r.d.high = rs[0].d.low, rs[0].d.low+n+19
		r.d.ports = fmt.Sprintf("%d-%d", r.d.low, r.d.high)
	}
	sh, err := etcdstore.OpenShared("etcd://"+e.Client+"/assign", "", "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer sh.Close()
	site := relay.Site{DataDir: rs[0].d.data, Docs: sh.Docs()}
	keys := make([]string, n)
	for i := range n {
		name := fmt.Sprintf("dev%03d", i)
		keys[i] = filepath.Join(rs[0].d.dir, name+".key")
		k, err := identity.GenerateKey(keys[i], name)
		if err != nil {
			t.Fatal(err)
		}
		if err := site.Authorize(name, k.PublicKey(), ""); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range rs {
		r.start(t, 0)
	}
	echo := fmt.Sprint("127.0.0.1:", startEcho(t))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	for i := range n {
		r := rs[i%2]
		svc, _ := node.ParseService("echo=" + echo)
		cfg := node.Config{Relay: r.addr, Fingerprint: r.d.fingerprint, KeyFile: keys[i], Name: fmt.Sprintf("dev%03d", i),
			Transport: node.TransportSSH, Services: []node.Service{svc}, BackoffMax: time.Second, RefusedRetry: time.Second}
		nd, err := node.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			if err := nd.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("node %s: %v", cfg.Name, err)
			}
		})
	}
	var lists [2]map[string]uint16
	for i, r := range rs {
		waitUntil(t, fmt.Sprintf("all %d playnodes online with a portalias, as %s sees them", n, r.ip), func() bool {
			var list struct{ Playnodes []apiPlaynode }
			if r.api(t, "/api/v1/playnodes", &list) != http.StatusOK {
				return false
			}
			got := map[string]uint16{}
			for _, p := range list.Playnodes {
				if p.Online && len(p.Services) == 1 && p.Services[0].State == relay.StateOnline {
					got[p.Name] = p.Services[0].Portalias
				}
			}
			lists[i] = got
			return len(got) == n
		})
	}
	owner := map[uint16]string{}
	for name, port := range lists[0] {
		if other, dup := owner[port]; dup {
			t.Errorf("portalias %d given to both %s and %s", port, other, name)
		}
		owner[port] = name
		if lists[1][name] != port {
			t.Errorf("%s: portalias %d on %s, %d on %s", name, port, rs[0].ip, lists[1][name], rs[1].ip)
		}
	}
}

// clusterNodeArgs are `paradigm-node run` flags for playnode name with
// every relay of rs, in order, each relay's fingerprint pinned.
func clusterNodeArgs(rs []*clusterRelay, name, key string, services ...string) []string {
	d := rs[0].d
	args := []string{"--log-format", "json", "run", "--key", key, "--name", name, "--lock", filepath.Join(d.dir, name+".lock"),
		"--backoff-max", "1s", "--refused-retry", "1s", "--keepalive", "1s", "--prefer-first-after", "1h"}
	for _, r := range rs {
		args = append(args, "--relay", r.addr, "--fingerprint", r.d.fingerprint)
	}
	for _, s := range services {
		args = append(args, "--service", s)
	}
	return args
}

// TestClusterThreeRelays is issue 15's end-to-end check with the built
// binaries: three relays on 127.0.0.2-4 share one etcd. A playnode
// connected to relay A answers on the same portalias on all three; after
// kill -9 of A it is back through B (its next relay) on the same
// portalias; a restarted A serves that portalias again through the mesh;
// revoked on C, it is cut at once and refused by every relay.
func TestClusterThreeRelays(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t)
	rs := newCluster(t, e, "three", 3)
	a, b, c := rs[0], rs[1], rs[2]
	storeURL := "etcd://" + e.Client + "/three"
	key := a.d.keygen(t, "pi")
	// Authorized once, for the whole cluster.
	mustRun(t, relayBin, "authorize", "--data", a.d.data, "--store", storeURL, "pi", key+".pub")
	for _, r := range rs {
		r.start(t, 0)
	}
	echo := portOf(fmt.Sprint("127.0.0.1:", startEcho(t)))
	start(t, "node pi", nodeBin, clusterNodeArgs(rs, "pi", key, "echo="+echo)...)
	port := a.waitHome(t, "pi", a.addr, "echo")
	for _, r := range rs {
		if got := r.waitHome(t, "pi", a.addr, "echo"); got != port {
			t.Fatalf("%s shows pi's portalias %d, A assigned %d", r.ip, got, port)
		}
		if err := echoAt(r.portalias(port)); err != nil {
			t.Fatal(err)
		}
	}

	aPort := a.port(t)
	killed := time.Now()
	if err := a.proc.stop(t, syscall.SIGKILL); err == nil {
		t.Fatal("relay A exited cleanly after SIGKILL")
	}
	for _, r := range []*clusterRelay{b, c} {
		if got := r.waitHome(t, "pi", b.addr, "echo"); got != port {
			t.Fatalf("after A's kill, %s shows pi's portalias %d, want %d", r.ip, got, port)
		}
	}
	back := time.Since(killed)
	for _, r := range []*clusterRelay{b, c} {
		if err := echoAt(r.portalias(port)); err != nil {
			t.Fatalf("after A's kill: %v", err)
		}
	}
	// The bound: the node sees A's connection reset at once and tries
	// its next relay after one backoff step (at most 1 s here).
	t.Logf("pi online through B %v after kill -9 of A (keepalive 1s, backoff-max 1s)", back.Round(time.Millisecond))

	a.start(t, aPort)
	if got := a.waitHome(t, "pi", b.addr, "echo"); got != port {
		t.Fatalf("restarted A shows pi's portalias %d, want %d", got, port)
	}
	if err := echoAt(a.portalias(port)); err != nil {
		t.Fatalf("through restarted A, over the mesh to B: %v", err)
	}

	revoked := time.Now()
	mustRun(t, relayBin, "revoke", "--data", c.d.data, "--store", storeURL, "pi")
	for _, r := range rs {
		waitUntil(t, r.ip+" to show pi offline after the revocation", func() bool { return !r.playnode(t, "pi").Online })
	}
	t.Logf("pi offline on every relay %v after revoke on C", time.Since(revoked).Round(time.Millisecond))
	// It keeps trying every relay (it fails over); each refuses its key.
	for _, r := range rs {
		waitUntil(t, r.ip+" to refuse pi's key", func() bool { return r.metric(t, "paradigm_relay_auth_failures_total") > 0 })
		if r.playnode(t, "pi").Online {
			t.Fatalf("%s let pi in after the revocation", r.ip)
		}
	}
	if err := echoAt(b.portalias(port)); err == nil {
		t.Fatal("pi's portalias still answers after the revocation")
	}
}
