// Command clusterbench measures a cluster of three relays sharing one
// etcd, on this machine's loopback, with 1,000 simulated playnodes: the
// relay mesh hop (latency and throughput through another relay against
// the playnode's home relay), the time for every playnode of a relay
// killed with SIGKILL to be back through the surviving relays, and each
// relay's RSS. It prints a Markdown table on stdout, progress on stderr.
// See bench/README.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"paradigm/bench/benchkit"
)

var (
	command   = benchkit.Command
	waitDial  = benchkit.WaitDial
	cliOutput = benchkit.CLIOutput
	logf      = benchkit.Logf
)

// storePrefix is the cluster's key prefix in etcd.
const storePrefix = "clusterbench"

// How relay A fails (-fail).
const (
	failKill = "kill"
	failStop = "stop"
)

// Who moves the failed relay's playnodes (-failover).
const (
	failoverNode  = "node"
	failoverBench = "bench"
)

// settings are the run's sizes and what it set up.
type settings struct {
	nodes        int
	rttN, connN  int
	bulk         int64
	bulkRounds   int
	keepalive    time.Duration
	failoverWait time.Duration
	portFrom     int
	keep         bool
	budget       time.Duration
	fail         string // failKill or failStop
	failover     string // failoverNode or failoverBench

	tmp               string
	relayBin          string
	etcdAddr          string
	portLow, portHigh int
}

func main() {
	var s settings
	flag.IntVar(&s.nodes, "nodes", 1000, "simulated playnodes, spread over the three relays")
	flag.IntVar(&s.rttN, "rtt", 5000, "64-byte round trips on a kept connection, per path")
	flag.IntVar(&s.connN, "conns", 500, "new connections (dial, one 64-byte round trip, close), per path")
	bulkMiB := flag.Int("bulk", 256, "MiB sent each way per bulk transfer")
	flag.IntVar(&s.bulkRounds, "bulk-rounds", 3, "bulk transfers each way per path (the median is reported)")
	flag.DurationVar(&s.keepalive, "keepalive", 10*time.Second, "--keepalive of relays and playnodes (the presence lease is twice this)")
	flag.DurationVar(&s.failoverWait, "failover-wait", 0, "longest wait for the failed relay's playnodes to be back (default 1m, with -fail stop 13 keepalives + 1m)")
	flag.IntVar(&s.portFrom, "ports-from", 23000, "lowest portalias tried (a free window of nodes+3 ports is used)")
	flag.StringVar(&s.fail, "fail", failKill, "how relay A fails: kill (SIGKILL: the kernel closes its connections) or stop (SIGSTOP: it hangs with its connections open)")
	flag.StringVar(&s.failover, "failover", failoverNode, "who moves the failed relay's playnodes: node (they fail over by themselves) or bench (the benchmark restarts each against the survivors once its session ended: an ideal move, for comparison)")
	flag.BoolVar(&s.keep, "keep", false, "keep the temporary folder (relay logs, data folders, etcd)")
	flag.DurationVar(&s.budget, "timeout", 15*time.Minute, "the whole run is cancelled after this")
	flag.Parse()
	s.bulk = int64(*bulkMiB) << 20
	if s.failoverWait == 0 {
		// A hung relay's kernel still acknowledges: its playnodes leave it
		// when a keepalive request has gone unanswered for 12 keepalives
		// (internal/mux/liveness.go).
		s.failoverWait = time.Minute
		if s.fail == failStop {
			s.failoverWait += 13 * s.keepalive
		}
	}
	if s.fail != failKill && s.fail != failStop {
		fmt.Fprintln(os.Stderr, "clusterbench: -fail is kill or stop")
		os.Exit(2)
	}
	if s.failover != failoverNode && s.failover != failoverBench {
		fmt.Fprintln(os.Stderr, "clusterbench: -failover is node or bench")
		os.Exit(2)
	}
	if s.nodes < 3 || s.rttN < hopRounds || s.connN < hopRounds || s.bulk <= 0 || s.bulkRounds < 1 {
		fmt.Fprintln(os.Stderr, "clusterbench: -nodes >= 3, -rtt and -conns >= 10, -bulk and -bulk-rounds >= 1")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, s.budget)
	defer cancel()
	if err := run(ctx, &s); err != nil {
		fmt.Fprintln(os.Stderr, "clusterbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, s *settings) error {
	start := time.Now()
	raiseNofile()
	tmp, err := os.MkdirTemp("", "clusterbench-")
	if err != nil {
		return err
	}
	s.tmp = tmp
	if s.keep {
		logf("keeping %s", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	if s.relayBin, _, err = benchkit.BuildBinaries(ctx, tmp); err != nil {
		return err
	}
	res := &results{s: s, load0: loadAvg()}
	c, err := startCluster(ctx, s, res)
	if err != nil {
		return err
	}
	defer c.close()
	if err := c.connectAll(ctx, res); err != nil {
		return err
	}
	if err := c.measureHop(ctx, res); err != nil {
		return err
	}
	if res.failover, err = measureFailover(ctx, s, c.fleet, c.relays, 0, c.nodes, c.simServices()); err != nil {
		return err
	}
	time.Sleep(3 * time.Second)
	for _, r := range c.relays[1:] {
		res.rssAfter = append(res.rssAfter, r.rssMiB())
	}
	res.took = time.Since(start)
	res.load1 = loadAvg()
	res.commit, _ = cliOutput(ctx, "git", "rev-parse", "--short", "HEAD")
	res.print(os.Stdout)
	return nil
}

// raiseNofile lifts the soft RLIMIT_NOFILE to the hard one: this process
// holds every simulated playnode's connection, and the relays, which
// inherit it, each a listener per portalias plus their sessions.
func raiseNofile() {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			logf("raise RLIMIT_NOFILE: %v", err)
		}
	}
}

// loadAvg is the first field of /proc/loadavg: how busy the shared
// machine was.
func loadAvg() string {
	data, err := os.ReadFile(filepath.Join("/proc", "loadavg"))
	if err != nil || len(data) == 0 {
		return "unknown"
	}
	var one string
	fmt.Sscan(string(data), &one)
	return one
}

func numCPU() int { return runtime.NumCPU() }
