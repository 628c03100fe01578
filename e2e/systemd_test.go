package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// units are the systemd units shipped in deploy/, with the binary each
// starts and the highest `systemd-analyze security` exposure allowed.
var units = []struct {
	file     string
	bin      *string
	maxScore float64
}{
	{"paradigm-relay.service", &relayBin, 2.0},
	{"paradigm-node.service", &nodeBin, 3.0},
}

// requireSystemdAnalyze returns the path of systemd-analyze; under CI a
// missing one fails (.ci/run installs it), elsewhere the test skips.
func requireSystemdAnalyze(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("systemd-analyze not installed (Debian package systemd)")
		}
		t.Skip("systemd-analyze not installed (Debian package systemd)")
	}
	return path
}

var exposure = regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)

// TestSystemdUnits checks the shipped units with systemd's own analyzer:
// `verify` (syntax, directives, the binary in ExecStart, here the one just
// built) and the offline `security` rating, which must stay at most 2.0 for
// the relay, which faces the internet, and 3.0 for the node.
func TestSystemdUnits(t *testing.T) {
	analyze := requireSystemdAnalyze(t)
	for _, u := range units {
		t.Run(u.file, func(t *testing.T) {
			text, err := os.ReadFile(filepath.Join("..", "deploy", u.file))
			if err != nil {
				t.Fatal(err)
			}
			installed := "/usr/local/bin/" + filepath.Base(*u.bin)
			if !bytes.Contains(text, []byte("ExecStart="+installed+" ")) {
				t.Fatalf("%s: no ExecStart=%s", u.file, installed)
			}
			unit := filepath.Join(t.TempDir(), u.file)
			text = bytes.ReplaceAll(text, []byte("="+installed+" "), []byte("="+*u.bin+" "))
			if err := os.WriteFile(unit, text, 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(analyze, "verify", unit).CombinedOutput()
			if err != nil || len(bytes.TrimSpace(out)) > 0 {
				t.Errorf("systemd-analyze verify %s: %v\n%s", u.file, err, out)
			}
			out, err = exec.Command(analyze, "security", "--offline=true", "--no-pager", unit).CombinedOutput()
			if err != nil {
				t.Fatalf("systemd-analyze security --offline=true %s: %v\n%s", u.file, err, out)
			}
			m := exposure.FindSubmatch(out)
			if m == nil {
				t.Fatalf("systemd-analyze security: no overall exposure level in\n%s", out)
			}
			score, err := strconv.ParseFloat(string(m[1]), 64)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: exposure %.1f", u.file, score)
			if score > u.maxScore {
				t.Errorf("%s: exposure %.1f, want at most %.1f\n%s", u.file, score, u.maxScore, out)
			}
		})
	}
}

// TestREADMEUnits: README shows each shipped unit in full, as an indented
// block starting with its "# /etc/systemd/system/NAME" line, identical to the
// file in deploy/.
func TestREADMEUnits(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(readme), "\n")
	for _, u := range units {
		file, err := os.ReadFile(filepath.Join("..", "deploy", u.file))
		if err != nil {
			t.Fatal(err)
		}
		start := slices.Index(lines, "    # /etc/systemd/system/"+u.file)
		if start < 0 {
			t.Errorf("README has no block starting with \"    # /etc/systemd/system/%s\"", u.file)
			continue
		}
		var block strings.Builder
		for _, l := range lines[start:] {
			if l != "" && !strings.HasPrefix(l, "    ") {
				break
			}
			block.WriteString(strings.TrimPrefix(l, "    ") + "\n")
		}
		got := strings.TrimRight(block.String(), "\n") + "\n"
		if got != string(file) {
			t.Errorf("README's %s block differs from deploy/%s:\n--- README\n%s--- deploy/%s\n%s", u.file, u.file, got, u.file, file)
		}
	}
}
