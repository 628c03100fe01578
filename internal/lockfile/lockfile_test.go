package lockfile

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// helperEnv names the lock file a re-executed test binary should hold.
const helperEnv = "LOCKFILE_TEST_HOLD"

// TestHelperHold is not a test: re-executed with helperEnv set, it takes the
// lock, says "locked" on stdout and holds it until killed or stdin closes.
func TestHelperHold(t *testing.T) {
	path := os.Getenv(helperEnv)
	if path == "" {
		t.Skip("helper process only")
	}
	l, err := TryAcquire(path)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("locked")
	io.Copy(io.Discard, os.Stdin)
	l.Release()
	os.Exit(0)
}

// startHolder runs a child process that holds the lock on path.
func startHolder(t *testing.T, path string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperHold$")
	cmd.Env = append(os.Environ(), helperEnv+"="+path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if got, want := strings.TrimSpace(line), "locked"; got != want {
		t.Fatalf("helper said %q (%v), want %q", got, err, want)
	}
	return cmd
}

func TestTryAcquireTwiceInProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "relay.lock")
	l, err := TryAcquire(path)
	if err != nil {
		t.Fatalf("first TryAcquire: %v", err)
	}
	_, err = TryAcquire(path)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second TryAcquire: got %v, want ErrLocked", err)
	}
	for _, want := range []string{path, "pid " + strconv.Itoa(os.Getpid())} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("got error %q, want it to contain %q", err, want)
		}
	}
	if err := l.Release(); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if err := l.Release(); err != nil {
		t.Fatalf("second Release: got %v, want nil", err)
	}
	l2, err := TryAcquire(path)
	if err != nil {
		t.Fatalf("TryAcquire after Release: %v", err)
	}
	defer l2.Release()
	if _, err := os.Stat(path); err != nil {
		t.Errorf("lock file after Release: %v, want it kept", err)
	}
}

func TestPIDInFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.lock")
	if err := os.WriteFile(path, []byte("a much longer stale content\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := TryAcquire(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), strconv.Itoa(os.Getpid())+"\n"; got != want {
		t.Errorf("got file %q, want %q", got, want)
	}
}

func TestNoParentDirs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "relay.lock")
	if _, err := TryAcquire(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("got %v, want an ErrNotExist error", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := Acquire(ctx, path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Acquire: got %v, want an ErrNotExist error", err)
	}
}

func TestAcquireWaitsForRelease(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.lock")
	first, err := TryAcquire(path)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		l, err := Acquire(context.Background(), path)
		if err == nil {
			err = l.Release()
		}
		got <- err
	}()
	// Acquire cannot succeed before Release: the lock is held until then.
	if err := first.Release(); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("Acquire: got %v, want nil", err)
	}
}

func TestAcquireContextDone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.lock")
	l, err := TryAcquire(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = Acquire(ctx, path)
	if !errors.Is(err, ErrLocked) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want ErrLocked and DeadlineExceeded", err)
	}
}

func TestOtherProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "relay.lock")
	holder := startHolder(t, path)

	_, err := TryAcquire(path)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("TryAcquire while child holds: got %v, want ErrLocked", err)
	}
	if want := fmt.Sprintf("(pid %d)", holder.Process.Pid); !strings.Contains(err.Error(), want) {
		t.Errorf("got error %q, want it to name %q", err, want)
	}

	// kill -9: the kernel drops the flock when the process dies, which has
	// happened once Wait returns.
	if err := holder.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	holder.Wait()
	l, err := TryAcquire(path)
	if err != nil {
		t.Fatalf("TryAcquire after holder was killed: got %v, want nil", err)
	}
	l.Release()
}

// exitedPID returns the PID of a child that has exited and been reaped.
func exitedPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

// TestNeverNamesExitedPID: a holder between flock and writing its PID
// leaves the previous holder's PID in the file; the conflict error must not
// name that exited process, but the real holder (from /proc/locks) or none.
func TestNeverNamesExitedPID(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.lock")
	dead := exitedPID(t)
	if err := os.WriteFile(path, []byte(strconv.Itoa(dead)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := flock(f, syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err) // held, PID not written yet
	}

	_, err = TryAcquire(path)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("got %v, want ErrLocked", err)
	}
	if strings.Contains(err.Error(), fmt.Sprintf("pid %d)", dead)) {
		t.Errorf("got %q, which names exited pid %d", err, dead)
	}
	if _, statErr := os.Stat("/proc/locks"); statErr == nil {
		if want := fmt.Sprintf("(pid %d)", os.Getpid()); !strings.Contains(err.Error(), want) {
			t.Errorf("got %q, want it to name the holder %s from /proc/locks", err, want)
		}
	}

	// Without the kernel's table, the file's PID is named only if alive.
	noTable := filepath.Join(t.TempDir(), "no-locks")
	if got := holderPID(f, noTable); got != 0 {
		t.Errorf("holderPID with exited pid %d in the file and no lock table: got %d, want 0", dead, got)
	}
	if err := os.WriteFile(path, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := holderPID(f, noTable); got != os.Getpid() {
		t.Errorf("holderPID with a live pid in the file: got %d, want %d", got, os.Getpid())
	}
}

// TestKernelHolder reads a lock table in /proc/locks format.
func TestKernelHolder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.lock")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	id := fmt.Sprintf("%02x:%02x:%d", unix.Major(uint64(st.Dev)), unix.Minor(uint64(st.Dev)), st.Ino)
	for _, tt := range []struct {
		name, table string
		want        int
	}{
		{"holder", "1: POSIX  ADVISORY  WRITE 7 " + id + " 0 EOF\n2: FLOCK  ADVISORY  WRITE 4242 " + id + " 0 EOF\n", 4242},
		{"waiter skipped", "1: -> FLOCK  ADVISORY  WRITE 99 " + id + " 0 EOF\n", 0},
		{"other inode", "1: FLOCK  ADVISORY  WRITE 4242 00:00:1 0 EOF\n", 0},
		{"hidden pid", "1: FLOCK  ADVISORY  WRITE -1 " + id + " 0 EOF\n", 0},
		{"garbage", "\x00\n1:\n", 0},
	} {
		table := filepath.Join(t.TempDir(), "locks")
		if err := os.WriteFile(table, []byte(tt.table), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := kernelHolder(f, table); got != tt.want {
			t.Errorf("%s: got %d, want %d", tt.name, got, tt.want)
		}
	}
}

// TestReadOnlyLockFile: a lock file this user may not write (root's, in a
// data folder shared with a service's own user) still locks, and a holder
// that could write it is seen. As root, which may write anything, the test
// binary is copied where another user can run it and re-run as nobody.
func TestReadOnlyLockFile(t *testing.T) {
	base := "" // $TMPDIR; as root, /tmp, which nobody can reach whatever $TMPDIR is
	if os.Geteuid() == 0 {
		base = "/tmp"
	}
	dir, err := os.MkdirTemp(base, "lockfile-ro-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "portaliases.lock")
	if err := os.WriteFile(path, []byte("1\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		l, err := TryAcquire(path)
		if err != nil {
			t.Fatalf("TryAcquire on a read-only lock file: %v", err)
		}
		if _, err := TryAcquire(path); !errors.Is(err, ErrLocked) {
			t.Errorf("second TryAcquire: got %v, want ErrLocked", err)
		}
		l.Release()
		return
	}
	bin := filepath.Join(dir, "lockfile.test")
	exe, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, exe, 0o755); err != nil {
		t.Fatal(err)
	}
	mine, err := TryAcquire(path) // root writes its PID
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	nobody := func() *exec.Cmd {
		cmd := exec.Command(bin, "-test.run=^TestHelperHold$")
		cmd.Env = append(os.Environ(), helperEnv+"="+path)
		cmd.Dir = dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		return cmd
	}
	out, _ := nobody().CombinedOutput()
	if want := fmt.Sprintf("(pid %d)", os.Getpid()); !strings.Contains(string(out), want) {
		t.Errorf("nobody's TryAcquire while root holds: got %q, want ErrLocked naming %s", out, want)
	}
	mine.Release()
	cmd := nobody()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		cmd.Wait()
	}()
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if got := strings.TrimSpace(line); got != "locked" {
		t.Fatalf("nobody's TryAcquire on root's 0644 lock file: got %q, want locked", got)
	}
	if _, err := TryAcquire(path); !errors.Is(err, ErrLocked) {
		t.Errorf("root's TryAcquire while nobody holds: got %v, want ErrLocked", err)
	}
}
