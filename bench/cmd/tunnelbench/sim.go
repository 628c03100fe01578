package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"paradigm/internal/identity"
	"paradigm/internal/node"
	"paradigm/internal/relay"
	"paradigm/internal/store"
)

const (
	simPortLow   = 21000
	simPerProc   = 2500
	simInFlight  = 64 // handshakes a simulator keeps in progress
	simConnected = "connected to relay"
	smallNodes   = 1000 // the smaller of the two node counts the team asked for
)

func simName(i int) string            { return fmt.Sprintf("sim-%05d", i) }
func simKey(dir string, i int) string { return filepath.Join(dir, simName(i)+".key") }

// measureNodes connects n simulated playnodes, each a real SSH session
// with its own key and its own registered service, to a fresh relay and
// reads the relay's RSS before and after. The full pass (main) also reads
// idle CPU, the simulators' memory and the bound offline portaliases; the
// other pass only the per-node KiB and connect time, into rowSrvNode1k and
// rowNodeUp1k.
func measureNodes(ctx context.Context, s *settings, res *results, n int, main bool) error {
	dir, err := os.MkdirTemp(s.tmp, "nodes-")
	if err != nil {
		return err
	}
	data, keys := filepath.Join(dir, "relay"), filepath.Join(dir, "keys")
	os.MkdirAll(keys, 0o700)
	logf("generating %d node keys", n)
	if err := prepareNodes(ctx, s, data, keys, n); err != nil {
		return err
	}
	fp, err := cliOutput(ctx, s.relayBin, "fingerprint", "--data", data)
	if err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	relayAddr := fmt.Sprintf("127.0.0.1:%d", port)
	t := &tunnel{name: "nodes"}
	defer t.stop()
	t.server = command(ctx, s.relayBin, "--log-level", "warn", "serve", "--data", data, "--listen", relayAddr,
		"--ports", fmt.Sprintf("%d-%d", simPortLow, simPortLow+n-1))
	if err := startLogged(t.server, dir, "relay"); err != nil {
		return err
	}
	if err := waitDial(ctx, relayAddr, 30*time.Second); err != nil {
		return err
	}
	time.Sleep(2 * time.Second)
	rss0 := treeRSS(t.serverPID())
	if idle, ok := res.get(rowSrvIdle, colParadigm); ok && main {
		res.set(rowListener, colParadigm, (rss0-idle*1024)/float64(n))
	}

	start := time.Now()
	var sims []*simProc
	defer func() {
		for _, p := range sims {
			p.stop()
		}
	}()
	for from := 0; from < n; from += simPerProc {
		p, err := startSim(ctx, s, dir, relayAddr, fp, keys, from, min(from+simPerProc, n))
		if err != nil {
			return err
		}
		sims = append(sims, p)
	}
	limit := 3 * time.Minute
	if s.quick {
		limit = time.Minute
	}
	for {
		total := 0
		for _, p := range sims {
			total += int(p.connected.Load())
		}
		if total >= n {
			break
		}
		if time.Since(start) > limit || ctx.Err() != nil {
			return fmt.Errorf("only %d of %d nodes connected after %v", total, n, limit)
		}
		time.Sleep(200 * time.Millisecond)
	}
	took := time.Since(start)
	if !main {
		time.Sleep(3 * time.Second)
		rss1 := treeRSS(t.serverPID())
		res.set(rowSrvNode1k, colParadigm, (rss1-rss0)/float64(n))
		res.set(rowNodeUp1k, colParadigm, took.Seconds())
		res.note("%d simulated nodes connected in %.1fs; relay RSS %.1f -> %.1f MiB", n, took.Seconds(), rss0/1024, rss1/1024)
		return nil
	}
	res.set(rowNodeUp, colParadigm, took.Seconds())
	time.Sleep(3 * time.Second)
	// One keepalive interval (10 s, both ends' default) holds every
	// session's pings in both directions once: the steady idle load.
	cpu0, t0 := treeCPU(t.serverPID()), time.Now()
	time.Sleep(10 * time.Second)
	cpu1 := treeCPU(t.serverPID())
	res.set(rowNodeCPU, colParadigm, 100*(cpu1-cpu0)/time.Since(t0).Seconds())
	rss1 := treeRSS(t.serverPID())
	var simRSS float64
	for _, p := range sims {
		simRSS += treeRSS(p.cmd.Process.Pid)
	}
	res.set(rowSrvNode, colParadigm, (rss1-rss0)/float64(n))
	res.set(rowSimNode, colParadigm, simRSS/float64(n))
	// Every node's service answers through its portalias: check a few.
	okCount := 0
	for _, i := range []int{0, n / 2, n - 1} {
		if echoOnce(fmt.Sprintf("127.0.0.1:%d", simPortLow+i)) == nil {
			okCount++
		}
	}
	res.note("%d simulated nodes in %d processes connected in %.1fs; relay RSS %.1f MiB (portaliases bound, no node) -> %.1f MiB; %d/3 sampled portaliases forwarded",
		n, len(sims), took.Seconds(), rss0/1024, rss1/1024, okCount)
	return nil
}

// prepareNodes creates the keys, authorizes them and pins their portaliases.
// The first key goes through relay.Authorize; the others are appended in
// the same authorized_nodes syntax at once, because Authorize rereads and
// atomically rewrites (with fsync) the whole file per call: 10,000 calls
// would take O(n²) work. Portaliases are written in one store.Update, as a
// relay restarted with 10,000 known playnodes has them.
func prepareNodes(ctx context.Context, s *settings, data, keys string, n int) error {
	if _, err := cliOutput(ctx, s.relayBin, "fingerprint", "--data", data); err != nil {
		return err
	}
	lines := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			signer, err := identity.GenerateKey(simKey(keys, i), simName(i))
			if err != nil {
				errs[i] = err
				return
			}
			if i == 0 {
				errs[i] = relay.Authorize(filepath.Join(data, relay.AuthorizedFile), simName(i), signer.PublicKey(), simName(i))
				return
			}
			lines[i] = fmt.Sprintf("playnode=%q %s\n", simName(i), identity.PublicLine(signer.PublicKey(), simName(i)))
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	f, err := os.OpenFile(filepath.Join(data, relay.AuthorizedFile), os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for _, l := range lines[1:] {
		w.WriteString(l)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	_, err = (&store.File{Path: filepath.Join(data, relay.PortaliasFile)}).Update(context.Background(), func(t *store.Table) error {
		for i := range n {
			if err := t.Set(store.Assignment{Playnode: simName(i), Service: "echo", Portalias: uint16(simPortLow + i)}); err != nil {
				return err
			}
		}
		return nil
	})
	return err
}

// simProc is one simulator process and its count of connected nodes.
type simProc struct {
	cmd       *exec.Cmd
	stdin     *os.File
	connected atomic.Int64
}

func (p *simProc) stop() {
	p.stdin.Close()
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.cmd.Wait()
}

func startSim(ctx context.Context, s *settings, dir, relayAddr, fp, keys string, from, to int) (*simProc, error) {
	p := &simProc{}
	p.cmd = command(ctx, s.benchBin, "simnodes", "-relay", relayAddr, "-fingerprint", fp, "-keys", keys,
		"-from", fmt.Sprint(from), "-to", fmt.Sprint(to), "-service", s.echoAddr)
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	p.cmd.Stdin, p.stdin = r, w
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(dir, fmt.Sprintf("sim-%d.log", from)))
	if err != nil {
		return nil, err
	}
	p.cmd.Stderr = logFile
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	r.Close()
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var c int64
			if _, err := fmt.Sscanf(sc.Text(), "connected %d", &c); err == nil {
				p.connected.Store(c)
			}
		}
	}()
	return p, nil
}

// simMain is the simulator: nodes [from, to) run in this process, each
// node.New/Run with its own key and service, as paradigm-node runs one. It
// prints how many are connected every 200 ms and exits when stdin closes.
func simMain(args []string) error {
	fs := flag.NewFlagSet("simnodes", flag.ContinueOnError)
	relayAddr := fs.String("relay", "", "relay address")
	fp := fs.String("fingerprint", "", "relay fingerprint")
	keys := fs.String("keys", "", "folder of sim-NNNNN.key files")
	from := fs.Int("from", 0, "first node")
	to := fs.Int("to", 0, "end of nodes (exclusive)")
	service := fs.String("service", "", "the echo service address every node registers")
	if err := fs.Parse(args); err != nil {
		return err
	}
	raiseNofile()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { // the parent closes stdin (or dies): stop
		buf := make([]byte, 1)
		os.Stdin.Read(buf)
		stop()
	}()
	var connected, started atomic.Int64
	var wg sync.WaitGroup
	defer wg.Wait()
	go func() {
		for ctx.Err() == nil {
			fmt.Printf("connected %d\n", connected.Load())
			time.Sleep(200 * time.Millisecond)
		}
	}()
	for i := *from; i < *to && ctx.Err() == nil; i++ {
		n, err := node.New(node.Config{
			Relay: *relayAddr, Fingerprint: *fp, KeyFile: simKey(*keys, i), Name: simName(i),
			Services: []node.Service{{Name: "echo", Addr: *service}},
			Logger:   slog.New(&countHandler{connected: &connected, up: new(atomic.Bool)}),
		})
		if err != nil {
			return err
		}
		started.Add(1)
		wg.Go(func() { n.Run(ctx) })
		for started.Load()-connected.Load() > simInFlight && ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
		}
	}
	<-ctx.Done()
	return nil
}

// countHandler counts this node's "connected to relay" minus its
// "disconnected from relay" log records into a shared counter.
type countHandler struct {
	connected *atomic.Int64
	up        *atomic.Bool
}

func (h *countHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *countHandler) Handle(_ context.Context, r slog.Record) error {
	if h.up == nil {
		return nil
	}
	switch r.Message {
	case simConnected:
		if !h.up.Swap(true) {
			h.connected.Add(1)
		}
	case "disconnected from relay":
		if h.up.Swap(false) {
			h.connected.Add(-1)
		}
	}
	return nil
}

func (h *countHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countHandler) WithGroup(string) slog.Handler      { return h }
