package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"paradigm/bench/benchkit"
)

// abSettings are those of -ab: paradigm over SSH on loopback against
// another build of it (e.g. one from before a change), bulk throughput
// only, in interleaved rounds. The two builds share every round's
// conditions, which on a shared machine drift by more than a change costs.
type abSettings struct {
	rounds      int
	secs        int      // iperf3 -t of each load
	relay, node string   // the other build's executables
	loads       []abLoad // measured in every round
}

// abLoad is one iperf3 load of a round.
type abLoad struct {
	name     string
	parallel int
	reverse  bool
}

// abLoads are the loads of one round, tunnelbench's bulk rows.
var abLoads = []abLoad{{"1 stream", 1, false}, {"1 stream -R", 1, true}, {"8 streams", 8, false}, {"8 streams -R", 8, true}}

// pickABLoads returns the loads named in list (comma-separated), all of
// them for "".
func pickABLoads(list string) ([]abLoad, error) {
	if list == "" {
		return abLoads, nil
	}
	var out []abLoad
	for name := range strings.SplitSeq(list, ",") {
		i := slices.IndexFunc(abLoads, func(l abLoad) bool { return l.name == strings.TrimSpace(name) })
		if i < 0 {
			var have []string
			for _, l := range abLoads {
				have = append(have, fmt.Sprintf("%q", l.name))
			}
			return nil, fmt.Errorf("-ab-loads: no load %q (have %s)", name, strings.Join(have, ", "))
		}
		out = append(out, abLoads[i])
	}
	return out, nil
}

// abSample is one load of one round: throughput and the CPU both ends
// spent per GiB.
type abSample struct{ gbit, cpuPerGiB float64 }

// runAB measures this tree's paradigm-relay and paradigm-node and the
// other build's, one after the other in every round (which goes first
// alternates), each with a fresh relay and node, and prints the medians.
func runAB(ctx context.Context, s *settings, ab abSettings, w io.Writer) error {
	start := time.Now()
	for _, bin := range []string{ab.relay, ab.node} {
		if _, err := os.Stat(bin); err != nil {
			return fmt.Errorf("-ab: the other build: %w", err)
		}
	}
	cleanup, err := setUp(ctx, s, "tunnelbench-ab-")
	if err != nil {
		return err
	}
	defer cleanup()

	builds := []paradigmRun{
		{name: "this tree"},
		{name: "other build", relayBin: ab.relay, nodeBin: ab.node},
	}
	samples := map[string]map[string][]abSample{} // build, row
	for round := range ab.rounds {
		order := builds
		if round%2 == 1 {
			order = []paradigmRun{builds[1], builds[0]}
		}
		for _, b := range order {
			t, err := startParadigmWith(ctx, s, b)
			if err != nil {
				return fmt.Errorf("%s: %w", b.name, err)
			}
			for _, l := range ab.loads {
				cpu0 := treeCPU(t.serverPID()) + treeCPU(t.clientPID())
				ir, err := runIperfRetry(ctx, t.iperfAddr, ab.secs, l.parallel, l.reverse, 0)
				if err != nil {
					t.stop()
					return fmt.Errorf("%s, round %d, %s: %w", b.name, round+1, l.name, err)
				}
				cpu := treeCPU(t.serverPID()) + treeCPU(t.clientPID()) - cpu0
				if samples[b.name] == nil {
					samples[b.name] = map[string][]abSample{}
				}
				samples[b.name][l.name] = append(samples[b.name][l.name], abSample{ir.bps / 1e9, cpu / (float64(ir.bytes) / (1 << 30))})
			}
			t.stop()
			logf("round %d/%d: %s done", round+1, ab.rounds, b.name)
		}
	}
	fmt.Fprintf(w, "tunnelbench -ab: paradigm over SSH on loopback, this tree against %s / %s; %d rounds, iperf3 -t %d, which build goes first alternates; took %v\n\n",
		ab.relay, ab.node, ab.rounds, ab.secs, time.Since(start).Round(time.Second))
	fmt.Fprintln(w, "| figure | this tree, median (min–max) | other build | this / other |")
	fmt.Fprintln(w, "|---|---:|---:|---:|")
	for _, l := range ab.loads {
		this, other := samples["this tree"][l.name], samples["other build"][l.name]
		gbit := func(x abSample) float64 { return x.gbit }
		cpu := func(x abSample) float64 { return x.cpuPerGiB }
		for _, f := range []struct {
			name string
			get  func(abSample) float64
		}{{"throughput " + l.name + " (Gbit/s)", gbit}, {"CPU s/GiB, " + l.name + " (relay+node)", cpu}} {
			a, b := abValues(this, f.get), abValues(other, f.get)
			fmt.Fprintf(w, "| %s | %s | %s | %.2fx |\n", f.name, abSpread(a), abSpread(b), benchkit.Median(a)/benchkit.Median(b))
		}
	}
	return nil
}

func abValues(s []abSample, get func(abSample) float64) []float64 {
	out := make([]float64, len(s))
	for i, x := range s {
		out[i] = get(x)
	}
	return out
}

func abSpread(vs []float64) string {
	if len(vs) == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f (%.2f–%.2f)", benchkit.Median(vs), slices.Min(vs), slices.Max(vs))
}
