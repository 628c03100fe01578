package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"paradigm/bench/benchkit"
)

// idleSettings are those of -idle-rss: only the device side's idle memory,
// OpenSSH's client and paradigm's node side by side, several rounds.
type idleSettings struct {
	rounds   int
	hold     time.Duration // how long each round idles; read at 15 s and at the end
	baseline string        // another node executable measured as one more column
}

// idleColumn is one device-side program of a round.
type idleColumn struct {
	name  string
	start func(ctx context.Context) (*tunnel, error)
}

// idleReading is /proc/PID/status of one device-side process, KiB.
type idleReading struct{ vmRSS, anon, file float64 }

const idleEarly = 15 * time.Second

// runIdleRSS starts, each round, `ssh -R` against a private sshd and
// paradigm-node (SSH and QUIC transports, release builds as README's
// Install section makes them) against its own relay, all at once; reads
// VmRSS, RssAnon and RssFile of each device-side process 15 s after start
// and at the end of the hold; stops them; and prints medians and ranges.
func runIdleRSS(ctx context.Context, s *settings, is idleSettings) error {
	start := time.Now()
	if err := ensurePackages(ctx); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "tunnelbench-idle-")
	if err != nil {
		return err
	}
	s.tmp = tmp
	if !s.keep {
		defer os.RemoveAll(tmp)
	}
	s.relayBin, s.nodeBin = filepath.Join(tmp, "paradigm-relay"), filepath.Join(tmp, "paradigm-node")
	for bin, pkg := range map[string]string{s.relayBin: "./cmd/relay", s.nodeBin: "./cmd/node"} {
		if err := benchkit.BuildRelease(ctx, pkg, bin); err != nil {
			return err
		}
	}
	nodeSize := fileSize(s.nodeBin)
	echo, err := startEcho()
	if err != nil {
		return err
	}
	defer echo.Close()
	// Nothing is forwarded: both forwarded services are the echo server.
	s.echoAddr, s.iperfAddr = echo.Addr().String(), echo.Addr().String()

	cols := []idleColumn{
		{"OpenSSH ssh -R", func(ctx context.Context) (*tunnel, error) { return startOpenSSH(ctx, s, "ssh", "", 0) }},
		{"paradigm-node (ssh)", func(ctx context.Context) (*tunnel, error) {
			return startParadigmWith(ctx, s, paradigmRun{name: colParadigm, idle: true})
		}},
		{"paradigm-node (quic)", func(ctx context.Context) (*tunnel, error) {
			return startParadigmWith(ctx, s, paradigmRun{name: colQUIC, quic: true, idle: true})
		}},
	}
	if is.baseline != "" {
		cols = append(cols, idleColumn{"baseline node (ssh)", func(ctx context.Context) (*tunnel, error) {
			return startParadigmWith(ctx, s, paradigmRun{name: "baseline", idle: true, nodeBin: is.baseline, ports: "20500-20599"})
		}})
	}
	early := make([][]idleReading, len(cols))
	late := make([][]idleReading, len(cols))
	for round := 1; round <= is.rounds; round++ {
		tunnels := make([]*tunnel, len(cols))
		started := make([]time.Time, len(cols))
		stopAll := func() {
			for _, t := range tunnels {
				if t != nil {
					t.stop()
				}
			}
		}
		for i, c := range cols {
			t, err := c.start(ctx)
			if err != nil {
				stopAll()
				return fmt.Errorf("round %d, %s: %w", round, c.name, err)
			}
			tunnels[i], started[i] = t, time.Now()
		}
		for _, at := range []struct {
			after time.Duration
			into  [][]idleReading
		}{{idleEarly, early}, {is.hold, late}} {
			for i, t := range tunnels {
				if err := sleepCtx(ctx, time.Until(started[i].Add(at.after))); err != nil {
					stopAll()
					return err
				}
				r, err := readIdle(t.clientPID())
				if err != nil {
					stopAll()
					return fmt.Errorf("round %d, %s: %w", round, cols[i].name, err)
				}
				at.into[i] = append(at.into[i], r)
			}
		}
		stopAll()
		logf("round %d of %d done", round, is.rounds)
	}
	printIdle(os.Stdout, s, is, cols, early, late, nodeSize, time.Since(start))
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// readIdle reads VmRSS, RssAnon and RssFile of pid.
func readIdle(pid int) (idleReading, error) {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return idleReading{}, err
	}
	var r idleReading
	found := 0
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		var dst *float64
		switch k {
		case "VmRSS":
			dst = &r.vmRSS
		case "RssAnon":
			dst = &r.anon
		case "RssFile":
			dst = &r.file
		default:
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		if *dst, err = strconv.ParseFloat(f[0], 64); err == nil {
			found++
		}
	}
	if found != 3 {
		return idleReading{}, fmt.Errorf("/proc/%d/status: VmRSS, RssAnon or RssFile missing", pid)
	}
	return r, nil
}

// medianRange formats the median and the range of xs, KiB.
func medianRange(xs []float64) string {
	if len(xs) == 0 {
		return "–"
	}
	med := benchkit.Median(xs)
	if len(xs) == 1 {
		return fmt.Sprintf("%.0f", med)
	}
	return fmt.Sprintf("%.0f (%.0f-%.0f)", med, slices.Min(xs), slices.Max(xs))
}

func printIdle(w io.Writer, s *settings, is idleSettings, cols []idleColumn, early, late [][]idleReading, nodeSize int64, took time.Duration) {
	vers := versions(context.Background())
	fmt.Fprintf(w, "### tunnelbench -idle-rss %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(w, "- command: `go run ./bench/cmd/tunnelbench -idle-rss %d -idle-hold %v", is.rounds, is.hold)
	if is.baseline != "" {
		fmt.Fprintf(w, " -baseline-node %s", is.baseline)
	}
	fmt.Fprintf(w, "`\n- %s; %s; kernel %s; paradigm %s; node executable %d bytes (`CGO_ENABLED=0 go build %s`)\n",
		vers["go"], vers["openssh"], vers["kernel"], vers["commit"], nodeSize, quoteFlags(benchkit.ReleaseBuildFlags))
	fmt.Fprintf(w, "- %d rounds, all columns of a round idling at once; median (min-max), KiB; took %s\n\n", is.rounds, took.Round(time.Second))
	fmt.Fprintln(w, "| device side | VmRSS at 15 s | RssAnon at 15 s | RssFile at 15 s | VmRSS at "+is.hold.String()+" | RssAnon | RssFile |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|")
	pick := func(rs []idleReading, f func(idleReading) float64) []float64 {
		var out []float64
		for _, r := range rs {
			out = append(out, f(r))
		}
		return out
	}
	vm := func(r idleReading) float64 { return r.vmRSS }
	anon := func(r idleReading) float64 { return r.anon }
	file := func(r idleReading) float64 { return r.file }
	for i, c := range cols {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n", c.name,
			medianRange(pick(early[i], vm)), medianRange(pick(early[i], anon)), medianRange(pick(early[i], file)),
			medianRange(pick(late[i], vm)), medianRange(pick(late[i], anon)), medianRange(pick(late[i], file)))
	}
}

func quoteFlags(fl []string) string {
	var out []string
	for _, f := range fl {
		if strings.ContainsAny(f, " ") {
			f = strconv.Quote(f)
		}
		out = append(out, f)
	}
	return strings.Join(out, " ")
}
