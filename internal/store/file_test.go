package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// tempFiles lists Update's leftovers in dir.
func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var tmp []string
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			tmp = append(tmp, e.Name())
		}
	}
	return tmp
}

// addN adds n entries playnode/svc<i> on ports base+i, one Update each.
func addN(f *File, playnode string, base, n int) error {
	for i := range n {
		a := Assignment{playnode, "svc" + strconv.Itoa(i), uint16(base + i)}
		if _, err := f.Update(context.Background(), func(t *Table) error { return t.Set(a) }); err != nil {
			return err
		}
	}
	return nil
}

func TestLoadMissing(t *testing.T) {
	f := &File{Path: filepath.Join(t.TempDir(), "portaliases")}
	tab, err := f.Load(context.Background())
	if err != nil {
		t.Fatalf("Load of a missing file: got %v, want nil", err)
	}
	if got := tab.Len(); got != 0 {
		t.Errorf("got Len %d, want 0", got)
	}
	if _, err := f.Update(context.Background(), func(*Table) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(f.Path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after a no-op Update: got %v, want no file", err)
	}
}

func TestUpdateCreatesAndKeepsEdits(t *testing.T) {
	dir := t.TempDir()
	f := &File{Path: filepath.Join(dir, "portaliases")}
	if _, err := f.Update(context.Background(), func(t *Table) error { return t.Set(Assignment{"pi", "ssh", 2201}) }); err != nil {
		t.Fatal(err)
	}
	if got, want := readFile(t, f.Path), Header+"pi ssh 2201\n"; got != want {
		t.Errorf("new file: got\n%s\nwant\n%s", got, want)
	}
	if fi, err := os.Stat(f.Path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("new file mode: got %v (%v), want 0644", fi.Mode().Perm(), err)
	}

	hand := "# mine\npi   ssh 2201 # door\n\n"
	if err := os.WriteFile(f.Path, []byte(hand), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(f.Path, 0o600); err != nil {
		t.Fatal(err)
	}
	tab, err := f.Update(context.Background(), func(t *Table) error { return t.Set(Assignment{"pi", "http", 8001}) })
	if err != nil {
		t.Fatal(err)
	}
	if got, want := readFile(t, f.Path), hand+"pi http 8001\n"; got != want {
		t.Errorf("after hand edit: got\n%s\nwant\n%s", got, want)
	}
	if got := tab.Len(); got != 2 {
		t.Errorf("returned table: got Len %d, want 2", got)
	}
	if fi, err := os.Stat(f.Path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode of a rewritten 0600 file: got %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	if tmp := tempFiles(t, dir); tmp != nil {
		t.Errorf("got temp files %v, want none", tmp)
	}
}

func TestUpdateFnErrorWritesNothing(t *testing.T) {
	f := &File{Path: filepath.Join(t.TempDir(), "portaliases")}
	const before = "pi ssh 2201\n"
	if err := os.WriteFile(f.Path, []byte(before), 0o644); err != nil {
		t.Fatal(err)
	}
	errStop := errors.New("stop")
	_, err := f.Update(context.Background(), func(t *Table) error {
		t.Remove("pi", "ssh")
		t.Set(Assignment{"po", "ssh", 2202})
		return errStop
	})
	if !errors.Is(err, errStop) {
		t.Errorf("got %v, want fn's error", err)
	}
	if got := readFile(t, f.Path); got != before {
		t.Errorf("got file %q, want it unchanged %q", got, before)
	}
}

func TestUpdateParseError(t *testing.T) {
	f := &File{Path: filepath.Join(t.TempDir(), "portaliases")}
	if err := os.WriteFile(f.Path, []byte("pi ssh 2201\npi ssh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	called := false
	_, err := f.Update(context.Background(), func(*Table) error { called = true; return nil })
	if want := f.Path + ":2: want 3 fields"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("got %v, want an error containing %q", err, want)
	}
	if called {
		t.Errorf("fn was called on a file that does not parse")
	}
}

func TestUpdateConcurrentGoroutines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "portaliases")
	const writers, n = 2, 20
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for w := range writers {
		wg.Go(func() {
			errs[w] = addN(&File{Path: path}, fmt.Sprintf("g%d", w), 10000+1000*w, n)
		})
	}
	wg.Wait()
	for w, err := range errs {
		if err != nil {
			t.Errorf("writer %d: %v", w, err)
		}
	}
	tab, err := (&File{Path: path}).Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := tab.Len(), writers*n; got != want {
		t.Errorf("got %d entries, want %d", got, want)
	}
}

// Environment of TestHelperAdd, set by TestUpdateConcurrentProcesses.
const (
	helperPath     = "STORE_TEST_PATH"
	helperPlaynode = "STORE_TEST_PLAYNODE"
	helperBase     = "STORE_TEST_BASE"
	helperN        = "STORE_TEST_N"
)

// TestHelperAdd is not a test: re-executed with helperPath set, it adds its
// entries to the store with one Update each and exits.
func TestHelperAdd(t *testing.T) {
	path := os.Getenv(helperPath)
	if path == "" {
		t.Skip("helper process only")
	}
	base, _ := strconv.Atoi(os.Getenv(helperBase))
	n, _ := strconv.Atoi(os.Getenv(helperN))
	if err := addN(&File{Path: path}, os.Getenv(helperPlaynode), base, n); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

func TestUpdateConcurrentProcesses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "portaliases")
	const procs, n = 2, 20
	cmds := make([]*exec.Cmd, procs)
	for p := range procs {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperAdd$")
		cmd.Env = append(os.Environ(),
			helperPath+"="+path,
			helperPlaynode+"="+fmt.Sprintf("p%d", p),
			helperBase+"="+strconv.Itoa(20000+1000*p),
			helperN+"="+strconv.Itoa(n))
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds[p] = cmd
	}
	// This process writes too, on a fourth range.
	if err := addN(&File{Path: path}, "self", 30000, n); err != nil {
		t.Error(err)
	}
	for p, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Errorf("helper %d: %v", p, err)
		}
	}
	tab, err := (&File{Path: path}).Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := tab.Len(), (procs+1)*n; got != want {
		t.Errorf("got %d entries, want %d", got, want)
	}
	for p := range procs {
		for i := range n {
			pn, svc := fmt.Sprintf("p%d", p), "svc"+strconv.Itoa(i)
			if got, ok := tab.Lookup(pn, svc); !ok || int(got) != 20000+1000*p+i {
				t.Errorf("Lookup(%s, %s): got %d %v, want %d", pn, svc, got, ok, 20000+1000*p+i)
			}
		}
	}
}

func TestUpdateWriteFails(t *testing.T) {
	const before = "# hand made\npi ssh 2201\n"
	add := func(t *Table) error { return t.Set(Assignment{"pi", "http", 8001}) }

	t.Run("read-only folder", func(t *testing.T) {
		dir := t.TempDir()
		f := &File{Path: filepath.Join(dir, "portaliases")}
		if err := os.WriteFile(f.Path, []byte(before), 0o644); err != nil {
			t.Fatal(err)
		}
		// The lock file must exist already: the folder will refuse it.
		if _, err := f.Update(context.Background(), func(*Table) error { return nil }); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, 0o555); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(dir, 0o755)
		if probe, err := os.CreateTemp(dir, "probe"); err == nil {
			probe.Close()
			os.Remove(probe.Name())
			t.Skip("permissions are not enforced here (running as root?)")
		}
		_, err := f.Update(context.Background(), add)
		if !errors.Is(err, os.ErrPermission) || !strings.Contains(err.Error(), dir) {
			t.Errorf("got %v, want a permission error naming %s", err, dir)
		}
		if got := readFile(t, f.Path); got != before {
			t.Errorf("got file %q, want it unchanged %q", got, before)
		}
		if tmp := tempFiles(t, dir); tmp != nil {
			t.Errorf("got temp files %v, want none", tmp)
		}
	})

	// The rename fails when the target became a non-empty folder between
	// the read and the write (fn stands in for the saboteur): the temp file
	// must go and the folder must be untouched.
	t.Run("rename fails", func(t *testing.T) {
		dir := t.TempDir()
		f := &File{Path: filepath.Join(dir, "portaliases")}
		if err := os.WriteFile(f.Path, []byte(before), 0o644); err != nil {
			t.Fatal(err)
		}
		inside := filepath.Join(f.Path, "keep")
		_, err := f.Update(context.Background(), func(t *Table) error {
			if err := os.Remove(f.Path); err != nil {
				return err
			}
			if err := os.Mkdir(f.Path, 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(inside, []byte(before), 0o644); err != nil {
				return err
			}
			return add(t)
		})
		if err == nil || !strings.Contains(err.Error(), f.Path) {
			t.Errorf("got %v, want a rename error naming %s", err, f.Path)
		}
		if got := readFile(t, inside); got != before {
			t.Errorf("got %q, want the folder's file unchanged %q", got, before)
		}
		if tmp := tempFiles(t, dir); tmp != nil {
			t.Errorf("got temp files %v, want none", tmp)
		}
	})
}
