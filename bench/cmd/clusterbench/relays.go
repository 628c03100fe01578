package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"paradigm/internal/relay"

	"paradigm/bench/benchkit"
)

// relayProc is one paradigm-relay serve process of the cluster: its own
// loopback address for --listen, --bind and --admin, its own data folder.
type relayProc struct {
	name   string // A, B, C
	host   string // 127.0.0.2 ...
	listen string // HOST:PORT playnodes and the other relays dial; its cluster id
	admin  string // HOST:PORT of its admin endpoint
	data   string
	fp     string // host key fingerprint
	log    string
	cmd    *exec.Cmd
	exited chan struct{}
}

// newRelay picks free ports on host for --listen and --admin and creates
// the host key (paradigm-relay fingerprint).
func newRelay(ctx context.Context, s *settings, name, host string) (*relayProc, error) {
	r := &relayProc{name: name, host: host, data: filepath.Join(s.tmp, "relay-"+name), log: filepath.Join(s.tmp, "relay-"+name+".log")}
	var err error
	if r.listen, err = freeAddr(host); err != nil {
		return nil, err
	}
	if r.admin, err = freeAddr(host); err != nil {
		return nil, err
	}
	if r.fp, err = cliOutput(ctx, s.relayBin, "fingerprint", "--data", r.data); err != nil {
		return nil, err
	}
	return r, nil
}

// args are the serve flags of r in the run's cluster.
func (r *relayProc) args(s *settings) []string {
	return []string{"serve", "--data", r.data, "--log-level", "info",
		"--listen", r.listen, "--advertise", r.listen, "--bind", r.host, "--admin", r.admin,
		"--ports", fmt.Sprintf("%d-%d", s.portLow, s.portHigh),
		"--store", "etcd://" + s.etcdAddr + "/" + storePrefix,
		"--keepalive", s.keepalive.String(),
		// Every simulated playnode dials from 127.0.0.1: the per-address
		// bound on unauthenticated connections (default 16), meant for one
		// device per address, would turn most of a failover burst away.
		"--max-unauth-per-address", strconv.Itoa(s.nodes + 64),
	}
}

// start runs the relay and waits until its playnode port and admin
// endpoint answer.
func (r *relayProc) start(ctx context.Context, s *settings) error {
	log, err := os.OpenFile(r.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	r.cmd = command(ctx, s.relayBin, r.args(s)...)
	r.cmd.Stdout, r.cmd.Stderr = log, log
	if err := r.cmd.Start(); err != nil {
		return fmt.Errorf("start relay %s: %w", r.name, err)
	}
	r.exited = make(chan struct{})
	go func() { r.cmd.Wait(); close(r.exited) }()
	for _, addr := range []string{r.listen, r.admin} {
		if err := waitDial(ctx, addr, 30*time.Second); err != nil {
			return fmt.Errorf("relay %s (log %s): %w", r.name, r.log, err)
		}
	}
	return nil
}

// kill sends SIGKILL and waits until the process is gone.
func (r *relayProc) kill() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	r.cmd.Process.Signal(syscall.SIGKILL)
	<-r.exited
}

// freeze stops the process with SIGSTOP: it hangs with every connection
// open, as a relay whose server froze would; kill still ends it.
func (r *relayProc) freeze() {
	if r.cmd != nil && r.cmd.Process != nil {
		r.cmd.Process.Signal(syscall.SIGSTOP)
	}
}

// rssMiB is the relay process's VmRSS.
func (r *relayProc) rssMiB() float64 { return benchkit.RSSKiB(r.cmd.Process.Pid) / 1024 }

// portalias is the address of portalias port on this relay.
func (r *relayProc) portalias(port uint16) string {
	return net.JoinHostPort(r.host, strconv.Itoa(int(port)))
}

// playnodes is the relay's admin view: every playnode it shows online,
// with the relay holding its session.
func (r *relayProc) playnodes(ctx context.Context) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.admin+"/api/v1/playnodes?online=true", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("relay %s admin: %s", r.name, resp.Status)
	}
	var list struct {
		Playnodes []relay.PlaynodeState `json:"playnodes"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return nil, fmt.Errorf("relay %s admin: %w", r.name, err)
	}
	out := make(map[string]string, len(list.Playnodes))
	for _, p := range list.Playnodes {
		if p.Online {
			out[p.Name] = p.Relay
		}
	}
	return out, nil
}

// freeAddr is a HOST:PORT on host that was free a moment ago.
func freeAddr(host string) (string, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// freeWindow finds count consecutive ports from low upwards that are free
// on every host (other tests on this machine may use 127.0.0.2-4 too),
// moving the window up to 20 times.
func freeWindow(hosts []string, low, count int) (int, error) {
	for range 20 {
		if low+count-1 > 32767 {
			break
		}
		if windowFree(hosts, low, count) {
			return low, nil
		}
		low += count
	}
	return 0, fmt.Errorf("no %d consecutive free ports on %v below 32768", count, hosts)
}

func windowFree(hosts []string, low, count int) bool {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for _, h := range hosts {
		for p := low; p < low+count; p++ {
			ln, err := net.Listen("tcp", net.JoinHostPort(h, strconv.Itoa(p)))
			if err != nil {
				return false
			}
			lns = append(lns, ln)
		}
	}
	return true
}

// cpuSeconds is the user+system CPU time pid used so far, from
// /proc/PID/stat (fields 14 and 15, in USER_HZ = 100 ticks a second).
func cpuSeconds(pid int) float64 {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3, state
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (u + st) / 100
}

func (r *relayProc) pid() int { return r.cmd.Process.Pid }
