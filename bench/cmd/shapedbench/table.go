package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"paradigm/bench/benchkit"
)

// results holds every phase, per direction and configuration, in run order.
type results struct {
	phases map[string]map[string][]phaseResult
	notes  []string
}

func newResults() *results { return &results{phases: map[string]map[string][]phaseResult{}} }

func (r *results) add(dir, cfg string, pr phaseResult) {
	if r.phases[dir] == nil {
		r.phases[dir] = map[string][]phaseResult{}
	}
	r.phases[dir][cfg] = append(r.phases[dir][cfg], pr)
	for _, err := range []error{pr.keptErr, pr.freshErr, pr.besideErr, pr.bulkErr} {
		if err != nil {
			r.notes = append(r.notes, fmt.Sprintf("%s, %s, run %d: %v", cfg, dir, len(r.phases[dir][cfg]), err))
		}
	}
}

// spread formats the median of vs and, with more than one run, its range.
func spread(vs []float64, format string) string {
	if len(vs) == 0 {
		return "–"
	}
	out := fmt.Sprintf(format, benchkit.Median(vs))
	if len(vs) > 1 {
		out += fmt.Sprintf(" ("+format+"–"+format+")", slices.Min(vs), slices.Max(vs))
	}
	return out
}

func (r *results) print(w io.Writer, s *settings, took time.Duration) {
	fmt.Fprintf(w, "shapedbench: uplink %d Mbit/s, downlink %d Mbit/s, tbf queue %d ms; phase %v (probes after %v), %d run(s); took %v\n\n",
		s.shape.upMbit, s.shape.downMbit, s.shape.queueMS, s.phase, s.warm, s.runs, took.Round(time.Second))
	if s.runs > 1 {
		fmt.Fprintf(w, "Each cell: median of the %d runs (min–max). \"added\" is p99 minus direct's p99 of the same run.\n\n", s.runs)
	} else {
		fmt.Fprintf(w, "\"added\" is p99 minus direct's p99.\n\n")
	}
	for _, dir := range []string{dirUp, dirDown} {
		fmt.Fprintf(w, "| %s | kept conn p50 ms | kept p99 ms | added p99 | new conn p50 ms | new p99 ms | added p99 | bulk Mbit/s | bulk / direct |\n", dir)
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")
		direct := r.phases[dir][cfgDirect]
		for _, cfg := range []string{cfgDirect, cfgOpenSSH, cfgParadigm, cfgQUIC} {
			prs := r.phases[dir][cfg]
			if len(prs) == 0 {
				continue
			}
			var k50, k99, kAdd, f50, f99, fAdd, mbit, ratio []float64
			for i, pr := range prs {
				if len(pr.kept) > 0 {
					k50, k99 = append(k50, ms(pr.kept, .5)), append(k99, ms(pr.kept, .99))
					if i < len(direct) && len(direct[i].kept) > 0 {
						kAdd = append(kAdd, ms(pr.kept, .99)-ms(direct[i].kept, .99))
					}
				}
				if len(pr.fresh) > 0 {
					f50, f99 = append(f50, ms(pr.fresh, .5)), append(f99, ms(pr.fresh, .99))
					if i < len(direct) && len(direct[i].fresh) > 0 {
						fAdd = append(fAdd, ms(pr.fresh, .99)-ms(direct[i].fresh, .99))
					}
				}
				if pr.bulkErr == nil {
					mbit = append(mbit, pr.mbit)
					if i < len(direct) && direct[i].bulkErr == nil && direct[i].mbit > 0 {
						ratio = append(ratio, 100*pr.mbit/direct[i].mbit)
					}
				}
			}
			cells := []string{cfg, spread(k50, "%.1f"), spread(k99, "%.1f"), spread(kAdd, "%+.1f"),
				spread(f50, "%.1f"), spread(f99, "%.1f"), spread(fAdd, "%+.1f"), spread(mbit, "%.1f"), spread(ratio, "%.0f %%")}
			if cfg == cfgDirect {
				cells[3], cells[6], cells[8] = "", "", ""
			}
			fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
		}
		fmt.Fprintln(w)
	}
	r.printBeside(w)
	fewest := -1
	for _, byCfg := range r.phases {
		for _, prs := range byCfg {
			for _, pr := range prs {
				if n := min(len(pr.kept), len(pr.fresh), len(pr.beside)); fewest < 0 || n < fewest {
					fewest = n
				}
			}
		}
	}
	fmt.Fprintf(w, "- fewest requests timed in one phase and mode: %d\n", fewest)
	for _, n := range r.notes {
		fmt.Fprintf(w, "- %s\n", n)
	}
}

// printBeside prints, per direction, what a request beside the tunnel
// (over the link, on a connection of its own) took while the tunnel's
// transfer filled the link, and how much more the tunnel's own request
// took: the router's queue is the link's share, the rest the tunnel's.
func (r *results) printBeside(w io.Writer) {
	fmt.Fprintln(w, "The same kept-connection request, sent at the same time over the link beside the tunnel (no tunnel, a connection of its own): what the router's queue, filled by the transfer, costs any traffic; \"tunnel's own\" is the tunnel's kept-connection p50 minus it, per run.")
	fmt.Fprintln(w)
	for _, dir := range []string{dirUp, dirDown} {
		fmt.Fprintf(w, "| %s | beside p50 ms | beside p99 ms | tunnel's own p50 ms |\n", dir)
		fmt.Fprintln(w, "|---|---:|---:|---:|")
		for _, cfg := range []string{cfgDirect, cfgOpenSSH, cfgParadigm, cfgQUIC} {
			prs := r.phases[dir][cfg]
			if len(prs) == 0 {
				continue
			}
			var b50, b99, own []float64
			for _, pr := range prs {
				if len(pr.beside) == 0 {
					continue
				}
				b50, b99 = append(b50, ms(pr.beside, .5)), append(b99, ms(pr.beside, .99))
				if len(pr.kept) > 0 {
					own = append(own, ms(pr.kept, .5)-ms(pr.beside, .5))
				}
			}
			cells := []string{cfg, spread(b50, "%.1f"), spread(b99, "%.1f"), spread(own, "%+.1f")}
			if cfg == cfgDirect {
				cells[3] = ""
			}
			fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
		}
		fmt.Fprintln(w)
	}
}
