package store

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Environment of the helper processes below.
const (
	crashPath = "STORE_TEST_CRASH_PATH" // TestHelperCrashWriter: the store file
	failPath  = "STORE_TEST_FAIL_PATH"  // TestHelperFailWriter: the store file
	failMode  = "STORE_TEST_FAIL_MODE"  // "full" or "readonly"
)

// TestHelperCrashWriter is not a test: re-executed with crashPath set, it
// adds one assignment per Update, forever, and prints each one once Update
// has returned, until it is killed.
func TestHelperCrashWriter(t *testing.T) {
	path := os.Getenv(crashPath)
	if path == "" {
		t.Skip("helper process only")
	}
	f := &File{Path: path}
	for {
		var a Assignment
		_, err := f.Update(context.Background(), func(t *Table) error {
			n := t.Len()
			a = Assignment{"crash", "svc" + strconv.Itoa(n), uint16(1 + n)}
			return t.Set(a)
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("committed %s %s %d\n", a.Playnode, a.Service, a.Portalias)
	}
}

// TestUpdateSurvivesKill kills a process that writes the store with
// SIGKILL at random moments, many times: after each kill the file must
// parse and hold every assignment the process reported committed.
func TestUpdateSurvivesKill(t *testing.T) {
	const kills, budget = 100, time.Minute
	dir := t.TempDir()
	path := filepath.Join(dir, "portaliases")
	committed := map[string]uint16{}
	start := time.Now()
	done := 0
	for done < kills && time.Since(start) < budget {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperCrashWriter$")
		cmd.Env = append(os.Environ(), crashPath+"="+path)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		// Kill after a random number of commits and a random moment into
		// the next one: sometimes before, sometimes during a write.
		wantCommits := rand.N(4)
		timer := time.NewTimer(time.Duration(rand.N(2000)) * time.Microsecond)
		for wantCommits > 0 {
			line, ok := <-lines
			if !ok {
				t.Fatalf("writer exited: %s", stderr.String())
			}
			record(t, committed, line)
			wantCommits--
		}
		timer.Reset(time.Duration(rand.N(3000)) * time.Microsecond)
	wait:
		for {
			select {
			case line, ok := <-lines:
				if !ok {
					t.Fatalf("writer exited: %s", stderr.String())
				}
				record(t, committed, line)
			case <-timer.C:
				break wait
			}
		}
		cmd.Process.Signal(syscall.SIGKILL)
		for line := range lines { // what it printed before it died
			record(t, committed, line)
		}
		cmd.Wait()
		done++

		tab, err := (&File{Path: path}).Load(context.Background())
		if err != nil {
			t.Fatalf("after kill %d: %v", done, err)
		}
		for svc, port := range committed {
			if got, ok := tab.Lookup("crash", svc); !ok || got != port {
				t.Fatalf("after kill %d: %s: got %d %v, want committed portalias %d", done, svc, got, ok, port)
			}
		}
	}
	if done < kills/10 {
		t.Fatalf("only %d kills within %v", done, budget)
	}
	left := len(tempFiles(t, dir))
	// The next writer clears what killed ones left behind.
	if _, err := (&File{Path: path}).Update(context.Background(), func(t *Table) error { return t.Set(Assignment{"crash", "last", 65535}) }); err != nil {
		t.Fatal(err)
	}
	if tmp := tempFiles(t, dir); tmp != nil {
		t.Errorf("after an Update: got temporary files %v, want none", tmp)
	}
	t.Logf("%d kills in %v, %d committed assignments all kept; %d temporary files left by kills, cleared by the next Update",
		done, time.Since(start).Round(time.Millisecond), len(committed), left)
}

func record(t *testing.T, committed map[string]uint16, line string) {
	t.Helper()
	var pn, svc string
	var port uint16
	if _, err := fmt.Sscanf(line, "committed %s %s %d", &pn, &svc, &port); err != nil {
		t.Fatalf("writer said %q: %v", line, err)
	}
	committed[svc] = port
}

// TestHelperFailWriter is not a test: re-executed with failPath set, it
// makes writes fail as failMode says, tries one Update and prints its
// error (or "ok").
func TestHelperFailWriter(t *testing.T) {
	path := os.Getenv(failPath)
	if path == "" {
		t.Skip("helper process only")
	}
	switch os.Getenv(failMode) {
	case "full":
		// A file size limit makes writes fail as a full disk does (EFBIG
		// rather than ENOSPC; Go ignores SIGXFSZ), with no privileges.
		lim := syscall.Rlimit{Cur: 64, Max: 64}
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
			fmt.Println("setup:", err)
			os.Exit(0)
		}
	case "readonly":
		// Root ignores folder permissions: become nobody first.
		if os.Getuid() == 0 {
			if err := syscall.Setuid(65534); err != nil {
				fmt.Println("setup:", err)
				os.Exit(0)
			}
		}
	}
	_, err := (&File{Path: path}).Update(context.Background(), func(t *Table) error {
		for i := range 10 {
			if err := t.Set(Assignment{"pi", "svc" + strconv.Itoa(i), uint16(8001 + i)}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		fmt.Println("error:", err)
	} else {
		fmt.Println("ok")
	}
	os.Exit(0)
}

// TestUpdateFullOrReadOnlyFolder: when the data folder is full or
// read-only, Update reports why and leaves the old file whole, with no
// temporary file behind. Both run in a helper process: one under a file
// size limit (a full disk, as far as write(2) tells), one as an
// unprivileged user in a folder it may not write (a read-only folder;
// mounting a read-only or full file system needs privileges tests should
// not need).
func TestUpdateFullOrReadOnlyFolder(t *testing.T) {
	const before = "# hand made\npi ssh 2201\n"
	for _, tc := range []struct{ mode, want string }{
		{"full", "file too large"},
		{"readonly", "permission denied"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			dir := t.TempDir()
			f := &File{Path: filepath.Join(dir, "portaliases")}
			if err := os.WriteFile(f.Path, []byte(before), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := f.Update(context.Background(), func(*Table) error { return nil }); err != nil { // creates the lock file
				t.Fatal(err)
			}
			if tc.mode == "readonly" {
				if os.Getuid() == 0 {
					// nobody must reach the folder and read the lock file.
					for _, p := range []string{filepath.Dir(dir), dir, f.Path + ".lock"} {
						if err := os.Chmod(p, 0o755); err != nil {
							t.Fatal(err)
						}
					}
					os.Chmod(f.Path+".lock", 0o666)
				}
				if err := os.Chmod(dir, 0o555); err != nil {
					t.Fatal(err)
				}
				defer os.Chmod(dir, 0o755)
			}
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperFailWriter$")
			cmd.Env = append(os.Environ(), failPath+"="+f.Path, failMode+"="+tc.mode)
			out, err := cmd.Output()
			got := strings.TrimSpace(string(out))
			if err != nil {
				t.Fatalf("helper: %v: %s", err, got)
			}
			if strings.HasPrefix(got, "setup:") {
				t.Skipf("cannot simulate a %s folder here: %s", tc.mode, got)
			}
			if !strings.HasPrefix(got, "error:") || !strings.Contains(got, tc.want) || !strings.Contains(got, "update portaliases") {
				t.Errorf("Update in a %s folder: got %q, want an error saying %q", tc.mode, got, tc.want)
			}
			if got := readFile(t, f.Path); got != before {
				t.Errorf("file: got %q, want it unchanged %q", got, before)
			}
			if tmp := tempFiles(t, dir); tmp != nil {
				t.Errorf("got temporary files %v, want none", tmp)
			}
		})
	}
}
