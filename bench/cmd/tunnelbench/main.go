// Command tunnelbench measures paradigm side by side with OpenSSH reverse
// forwarding (ssh -R) and with direct loopback TCP, on this machine, in one
// run, and prints one table. See bench/README.md.
//
// Path measured for every tunnel:
//
//	client -> portalias (or ssh -R port) -> tunnel -> device side -> iperf3 -s / echo server
//
// Everything runs on 127.0.0.1 and every load loop is bounded in count and
// time.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// settings are the run's sizes; -quick shrinks them.
type settings struct {
	quick       bool
	iperfSecs   int
	rttN        int
	connN       int
	holdN       int
	nodesN      int
	delay       time.Duration
	delayBoth   bool          // also the -R runs through the delay proxy
	settle      time.Duration // wait before reading RSS
	profile     bool
	keep        bool
	relayBin    string
	nodeBin     string
	tmp         string
	iperfAddr   string // device-local iperf3 -s
	echoAddr    string // device-local echo server
	benchBin    string // this program, re-executed as the node simulator
	deadlineAt  time.Time
	nodesCapped string // why nodesN is below what was asked
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "simnodes" {
		if err := simMain(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "simnodes:", err)
			os.Exit(1)
		}
		return
	}
	var s settings
	flag.BoolVar(&s.quick, "quick", false, "short run (about 2-3 minutes): 2 s iperf3 runs, fewer round trips, 1,000 simulated nodes")
	nodes := flag.Int("nodes", 0, "simulated playnodes for the per-node memory figure (default 10000, quick 1000; 0 keeps the default, -1 skips)")
	flag.BoolVar(&s.profile, "profile", true, "perf-record relay and node during an extra 1-stream run (needs perf)")
	flag.BoolVar(&s.keep, "keep", false, "keep the temporary folder (logs, configs)")
	var is idleSettings
	flag.IntVar(&is.rounds, "idle-rss", 0, "measure only the device side's idle memory (OpenSSH client, paradigm-node over SSH and QUIC), this many rounds")
	flag.DurationVar(&is.hold, "idle-hold", 40*time.Second, "with -idle-rss: how long each round idles (read at 15 s and at the end)")
	flag.StringVar(&is.baseline, "baseline-node", "", "with -idle-rss or -ab: another paradigm-node executable (e.g. built from an older commit) measured as one more column")
	var ab abSettings
	flag.IntVar(&ab.rounds, "ab", 0, "measure only paradigm's loopback bulk throughput against another build (-baseline-relay, -baseline-node), this many interleaved rounds")
	flag.StringVar(&ab.relay, "baseline-relay", "", "with -ab: the other build's paradigm-relay executable")
	flag.IntVar(&ab.secs, "ab-secs", 3, "with -ab: iperf3 -t of each load")
	abOnly := flag.String("ab-loads", "", "with -ab: only these loads, comma-separated (\"1 stream\", \"1 stream -R\", \"8 streams\", \"8 streams -R\"); default all")
	flag.Parse()
	if ab.rounds > 0 {
		ab.node = is.baseline
		if ab.relay == "" || ab.node == "" || ab.rounds > 50 || ab.secs < 1 || ab.secs > 30 {
			fmt.Fprintln(os.Stderr, "tunnelbench: -ab wants -baseline-relay and -baseline-node, at most 50 rounds, -ab-secs 1-30")
			os.Exit(2)
		}
		var err error
		if ab.loads, err = pickABLoads(*abOnly); err != nil {
			fmt.Fprintln(os.Stderr, "tunnelbench:", err)
			os.Exit(2)
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		// Bounded: per round two builds, four loads each, plus start-up.
		ctx, cancel := context.WithTimeout(ctx, time.Duration(ab.rounds)*2*(time.Duration(len(ab.loads))*time.Duration(ab.secs+5)*time.Second+20*time.Second)+5*time.Minute)
		defer cancel()
		if err := runAB(ctx, &s, ab, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "tunnelbench:", err)
			os.Exit(1)
		}
		return
	}
	if is.rounds > 0 {
		if is.hold < idleEarly {
			fmt.Fprintf(os.Stderr, "tunnelbench: -idle-hold %v is shorter than the %v of the first reading\n", is.hold, idleEarly)
			os.Exit(2)
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if err := runIdleRSS(ctx, &s, is); err != nil {
			fmt.Fprintln(os.Stderr, "tunnelbench:", err)
			os.Exit(1)
		}
		return
	}
	s.iperfSecs, s.rttN, s.connN, s.holdN, s.nodesN, s.delay, s.delayBoth = 5, 5000, 500, 1000, 10000, 25*time.Millisecond, true
	s.settle = 2 * time.Second
	if s.quick {
		s.iperfSecs, s.rttN, s.connN, s.nodesN, s.delayBoth, s.settle = 2, 2000, 200, 1000, false, time.Second
	}
	if *nodes != 0 {
		s.nodesN = max(*nodes, 0)
	}
	budget := 15 * time.Minute
	if s.quick {
		budget = 5 * time.Minute
	}
	s.deadlineAt = time.Now().Add(budget)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithDeadline(ctx, s.deadlineAt)
	defer cancel()
	if err := run(ctx, &s); err != nil {
		fmt.Fprintln(os.Stderr, "tunnelbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, s *settings) error {
	start := time.Now()
	if err := raiseNofile(); err != nil {
		logf("raise RLIMIT_NOFILE: %v (the 10,000-node figure may fail)", err)
	}
	if limit := nofileLimit(); s.nodesN > 0 && limit > 0 {
		// The relay holds two descriptors per connected node (its SSH
		// connection and its portalias listener), plus some slack.
		if fit := int(limit-1000) / 2; s.nodesN > fit {
			s.nodesCapped = fmt.Sprintf("%d simulated nodes asked, %d fit RLIMIT_NOFILE %d (hard limit, not raisable here)", s.nodesN, fit, limit)
			logf("%s", s.nodesCapped)
			s.nodesN = fit
		}
	}
	var err error
	if s.benchBin, err = os.Executable(); err != nil {
		return err
	}
	cleanup, err := setUp(ctx, s, "tunnelbench-")
	if err != nil {
		return err
	}
	defer cleanup()
	vers := versions(ctx)

	res := newResults()
	direct := &tunnel{name: colDirect, iperfAddr: s.iperfAddr, echoAddr: s.echoAddr}
	if err := measureTunnel(ctx, s, direct, res); err != nil {
		return err
	}
	for _, cfg := range []struct{ col, cipher string }{{colSSHDefault, ""}, {colSSHAES, "aes128-gcm@openssh.com"}} {
		t, err := startOpenSSH(ctx, s, cfg.col, cfg.cipher, 0)
		if err != nil {
			return err
		}
		err = measureTunnel(ctx, s, t, res)
		t.stop()
		if err != nil {
			return err
		}
	}
	t, err := startParadigm(ctx, s, colParadigm, 0, false)
	if err != nil {
		return err
	}
	err = measureTunnel(ctx, s, t, res)
	if err == nil && s.profile {
		res.profile = profileRun(ctx, s, t)
	}
	t.stop()
	if err != nil {
		return err
	}
	// The same relay and node over QUIC (UDP, same port number).
	if t, err := startParadigm(ctx, s, colQUIC, 0, true); err != nil {
		res.note("%s: %v", colQUIC, err)
	} else {
		err = measureTunnel(ctx, s, t, res)
		t.stop()
		if err != nil {
			return err
		}
	}

	// The long fat link: the same throughput with 25 ms added each way
	// between the device side and the server side.
	for _, cfg := range []struct{ col, cipher string }{{colSSHDefault, ""}, {colSSHAES, "aes128-gcm@openssh.com"}, {colParadigm, "paradigm"}, {colQUIC, "quic"}} {
		if s.quick && cfg.col == colSSHDefault {
			continue // quick: the ratio column only needs aes128-gcm
		}
		var t *tunnel
		var err error
		switch cfg.cipher {
		case "paradigm", "quic":
			t, err = startParadigm(ctx, s, cfg.col, s.delay, cfg.cipher == "quic")
		default:
			t, err = startOpenSSH(ctx, s, cfg.col, cfg.cipher, s.delay)
		}
		if err != nil {
			if cfg.col == colQUIC {
				res.note("%s over the %v link: %v", cfg.col, s.delay, err)
				continue
			}
			return err
		}
		measureDelayed(ctx, s, t, res)
		t.stop()
	}
	if s.nodesN > 0 {
		if s.nodesCapped != "" {
			res.note("%s", s.nodesCapped)
		}
		// The team asked for 1,000 and for 10,000 nodes: a full run measures
		// 1,000 first, on a relay of its own.
		if s.nodesN > smallNodes {
			if err := measureNodes(ctx, s, res, smallNodes, false); err != nil {
				logf("%d simulated nodes: %v", smallNodes, err)
				res.notes = append(res.notes, fmt.Sprintf("%d simulated nodes: %v", smallNodes, err))
			}
		}
		if err := measureNodes(ctx, s, res, s.nodesN, true); err != nil {
			logf("simulated nodes: %v", err)
			res.notes = append(res.notes, fmt.Sprintf("simulated nodes: %v", err))
		}
	}
	res.print(os.Stdout, s, vers, time.Since(start))
	return nil
}
