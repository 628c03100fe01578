// Command shapedbench measures how fast a device's API answers through each
// tunnel while a bulk transfer fills the device's link, and prints the
// table recorded in bench/README.md.
//
// It needs root: it builds the setup itself. The playnode lives in a
// network namespace of its own (named after this process's PID), joined to
// the server side by a veth pair with a private /30 from 10.231.0.0/16;
// both egresses are shaped by tbf (uplink 20 Mbit/s, downlink 50 Mbit/s,
// 100 ms queue: a home router). The namespace, and with it the veth pair,
// is removed on exit, also on error or interrupt. Traffic goes only to the
// namespace's address, the server side's veth address and loopback.
//
// For each configuration (direct, OpenSSH -R, paradigm over SSH, paradigm
// over QUIC) and each direction it runs iperf3 (one stream) through the
// tunnel to the device's iperf3 -s for one phase, and meanwhile a 64-byte
// request every 50 ms from the server side to an echo service on the
// device, on a kept connection and, concurrently, on a new connection per
// request; and the same kept-connection request over the link beside the
// tunnel, which separates the router's queue (the link's share) from what
// the tunnel's own queues add.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"paradigm/bench/benchkit"
)

type settings struct {
	phase, warm time.Duration
	runs        int
	only        []string
	keep        bool
	shape       shaping
}

func main() {
	if len(os.Args) == 3 && os.Args[1] == "echo" {
		if err := serveEcho(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "echo:", err)
			os.Exit(1)
		}
		return
	}
	var s settings
	flag.DurationVar(&s.phase, "phase", 20*time.Second, "length of one bulk transfer (one configuration, one direction)")
	flag.DurationVar(&s.warm, "warm", 4*time.Second, "bulk time before the probes start (queues fill)")
	flag.IntVar(&s.runs, "runs", 1, "repeat every configuration this many times (fresh tunnels each time) and print the spread")
	only := flag.String("only", "", "comma-separated configurations to run besides direct: openssh, ssh, quic (default all)")
	flag.BoolVar(&s.keep, "keep", false, "keep the temporary folder (logs, configs)")
	flag.IntVar(&s.shape.upMbit, "up", 20, "uplink (device to server) rate, Mbit/s")
	flag.IntVar(&s.shape.downMbit, "down", 50, "downlink (server to device) rate, Mbit/s")
	flag.IntVar(&s.shape.queueMS, "queue", 100, "tbf queue limit, ms at the rate")
	flag.Parse()
	if *only != "" {
		s.only = strings.Split(*only, ",")
	}
	if s.phase < 5*time.Second || s.warm >= s.phase-2*time.Second || s.runs < 1 || s.runs > 10 {
		fmt.Fprintln(os.Stderr, "shapedbench: want -phase >= 5s, -warm < phase-2s, 1 <= -runs <= 10")
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fmt.Println("shapedbench: needs root (network namespace, veth, tbf); skipped")
		return
	}
	// Bounded: 4 configurations x 2 directions x runs phases, plus start-up.
	budget := time.Duration(s.runs)*(8*s.phase+2*time.Minute) + 5*time.Minute
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	err := run(ctx, &s)
	var skip errNoNamespace
	if errors.As(err, &skip) {
		fmt.Printf("shapedbench: cannot create a network namespace (%v); skipped\n", skip.err)
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "shapedbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, s *settings) error {
	start := time.Now()
	l, err := newLink(ctx, s.shape)
	if err != nil {
		return err
	}
	defer l.close()
	benchkit.Logf("namespace %s, veth %s (%s) <-> %s (%s), %s", l.ns, l.srvIf, l.srvIP, l.devIf, l.devIP, l.prefix)
	if err := benchkit.EnsurePackages(ctx); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "shapedbench-")
	if err != nil {
		return err
	}
	if s.keep {
		benchkit.Logf("keeping %s", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	e := &env{link: l, tmp: tmp}
	if e.self, err = os.Executable(); err != nil {
		return err
	}
	if e.relayBin, e.nodeBin, err = benchkit.BuildBinaries(ctx, tmp); err != nil {
		return err
	}
	direct, err := e.startServices(ctx)
	if err != nil {
		return err
	}
	defer direct.stop()

	res := newResults()
	for r := range s.runs {
		for _, cfg := range []string{cfgDirect, cfgOpenSSH, cfgParadigm, cfgQUIC} {
			if !s.wants(cfg) {
				continue
			}
			t := direct
			switch cfg {
			case cfgOpenSSH:
				t, err = e.startOpenSSH(ctx)
			case cfgParadigm, cfgQUIC:
				t, err = e.startParadigm(ctx, cfg == cfgQUIC)
			}
			if err != nil {
				return err
			}
			for _, dir := range []string{dirUp, dirDown} {
				benchkit.Logf("run %d/%d: %s, %s", r+1, s.runs, cfg, dir)
				pr := runPhase(ctx, t, dir, s.phase, s.warm, direct.echoAddr)
				res.add(dir, cfg, pr)
				if ctx.Err() != nil {
					break
				}
			}
			if t != direct {
				t.stop()
			}
			if err := ctx.Err(); err != nil {
				return err
			}
		}
	}
	res.print(os.Stdout, s, time.Since(start))
	return nil
}

// wants reports whether -only selects cfg; direct always runs, it is the
// reference.
func (s *settings) wants(cfg string) bool {
	if cfg == cfgDirect || len(s.only) == 0 {
		return true
	}
	short := map[string]string{cfgOpenSSH: "openssh", cfgParadigm: "ssh", cfgQUIC: "quic"}[cfg]
	return slices.Contains(s.only, short)
}
