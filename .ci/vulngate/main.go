// Command vulngate reads `govulncheck -format json` on stdin and fails when
// the code calls a known-vulnerable function of a dependency. Findings in the
// standard library are printed as warnings instead: the project builds with
// the toolchain installed on the machine and cannot pick another here, so
// the remedy for those is a newer Go on the build machine, which the warning
// names.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

type frame struct {
	Module   string `json:"module"`
	Version  string `json:"version"`
	Package  string `json:"package"`
	Function string `json:"function"`
}

type message struct {
	Finding *struct {
		OSV          string  `json:"osv"`
		FixedVersion string  `json:"fixed_version"`
		Trace        []frame `json:"trace"`
	} `json:"finding"`
}

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "vulngate:", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer) error {
	dec := json.NewDecoder(in)
	called := map[string]string{} // "module osv" -> description
	for {
		var m message
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read govulncheck output: %w", err)
		}
		f := m.Finding
		if f == nil || len(f.Trace) == 0 || f.Trace[0].Function == "" {
			continue // imported or required, but not called
		}
		t := f.Trace[0]
		called[t.Module+" "+f.OSV] = fmt.Sprintf("%s %s in %s@%s (%s), fixed in %s", f.OSV, t.Package, t.Module, t.Version, t.Function, f.FixedVersion)
	}
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range called {
			if !yield(k) {
				return
			}
		}
	})
	var failing int
	for _, k := range keys {
		if strings.HasPrefix(k, "stdlib ") {
			fmt.Fprintln(out, "warning: toolchain:", called[k])
			continue
		}
		fmt.Fprintln(out, "vulnerable dependency:", called[k])
		failing++
	}
	if failing > 0 {
		return fmt.Errorf("%d known vulnerabilities reachable in dependencies: upgrade them", failing)
	}
	fmt.Fprintf(out, "no reachable vulnerabilities in dependencies (%d in the installed Go toolchain's standard library, above)\n", len(keys))
	return nil
}
