// Package lockfile provides single-instance locks built on flock(2): one
// relay per data folder, one node per --lock file, one writer of the
// portalias store at a time.
//
// The kernel drops a flock when the last descriptor of the open file goes
// away, including when the holder is killed, so a crashed holder never
// leaves a stale lock. Lock files are never deleted: unlinking a lock file
// lets a newcomer lock a fresh inode while an old holder still has the
// unlinked one, and both believe they are alone.
package lockfile

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrLocked is wrapped by the errors of TryAcquire and Acquire when another
// open file description (another process, or another Lock in this one) holds
// the lock. A second instance that finds the first running tests for it with
// errors.Is.
var ErrLocked = errors.New("lock is held by another process")

// Lock is an exclusive flock on a file, held until Release or process exit.
type Lock struct {
	path string

	mu sync.Mutex
	f  *os.File // nil once released
}

// TryAcquire takes the lock on path without waiting. It creates the file if
// needed (but no parent folders), and once the lock is held replaces the
// file's contents with the holder's PID so operators can see who has it. On
// conflict the error wraps ErrLocked and names the path and, when the file
// says, the holder's PID.
func TryAcquire(path string) (*Lock, error) {
	f, err := open(path)
	if err != nil {
		return nil, err
	}
	if err := lockOrExplain(f, path); err != nil {
		f.Close()
		return nil, err
	}
	return held(f, path), nil
}

// WriterWait bounds how long the writers of one file (the relay, the
// operator's commands) wait for one another.
const WriterWait = 10 * time.Second

// AcquireFor takes the lock guarding the file at path (path + ".lock"),
// waiting at most WriterWait; a failure names what the file holds.
func AcquireFor(path, what string) (*Lock, error) {
	ctx, cancel := context.WithTimeout(context.Background(), WriterWait)
	defer cancel()
	l, err := Acquire(ctx, path+".lock")
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", what, err)
	}
	return l, nil
}

// Acquire takes the lock on path, waiting until it is free or ctx is done.
// flock(2) cannot be interrupted by a context, so it polls with LOCK_NB and a
// backoff growing from 2 ms to 25 ms. When ctx ends first the error wraps
// both ErrLocked and the context's error.
func Acquire(ctx context.Context, path string) (*Lock, error) {
	f, err := open(path)
	if err != nil {
		return nil, err
	}
	wait := 2 * time.Millisecond
	for {
		err := lockOrExplain(f, path)
		if err == nil {
			return held(f, path), nil
		}
		if !errors.Is(err, ErrLocked) {
			f.Close()
			return nil, err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			f.Close()
			return nil, fmt.Errorf("%w: %w", err, context.Cause(ctx))
		case <-t.C:
		}
		wait = min(2*wait, 25*time.Millisecond)
	}
}

// Path returns the lock file's path.
func (l *Lock) Path() string { return l.path }

// Release drops the lock. It is idempotent; the file stays (see the package
// doc), still naming the last holder's PID.
func (l *Lock) Release() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the only descriptor drops the flock
	l.f = nil
	if err != nil {
		return fmt.Errorf("release lock %s: %w", l.path, err)
	}
	return nil
}

// open opens the lock file, creating it. flock(2) needs no write access,
// so a lock file this user may only read is opened read-only (and the PID
// is not written): a root-owned lock that an operator's command created in
// a data folder a service's own user shares still locks.
func open(path string) (*os.File, error) {
	// os.OpenFile sets O_CLOEXEC, so children never inherit the lock.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if errors.Is(err, fs.ErrPermission) {
		if ro, roErr := os.Open(path); roErr == nil {
			return ro, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	return f, nil
}

// lockOrExplain tries flock(LOCK_EX|LOCK_NB) once. A conflict becomes an
// error wrapping ErrLocked that names the holder's PID when readable.
func lockOrExplain(f *os.File, path string) error {
	err := flock(f, syscall.LOCK_EX|syscall.LOCK_NB)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.EWOULDBLOCK):
		if pid := holderPID(f, "/proc/locks"); pid > 0 {
			return fmt.Errorf("lock %s: %w (pid %d)", path, ErrLocked, pid)
		}
		return fmt.Errorf("lock %s: %w", path, ErrLocked)
	default:
		return fmt.Errorf("lock %s: %w", path, err)
	}
}

func flock(f *os.File, how int) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	err = rc.Control(func(fd uintptr) {
		for {
			ferr = syscall.Flock(int(fd), how)
			if ferr != syscall.EINTR {
				return
			}
		}
	})
	if err != nil {
		return err
	}
	return ferr
}

// holderPID returns the PID of the process holding the flock on f, or 0
// when that is not known: never the PID of a process that has exited. The
// file's own PID can be stale: a new holder writes its PID only just after
// taking the lock, so between the two the file still names the previous,
// possibly exited, holder. The kernel's table of locks, /proc/locks, names
// the holder exactly; where it cannot be read (or hides the PID, from
// another PID namespace), the file's PID is used only if that process is
// alive.
func holderPID(f *os.File, locks string) int {
	if pid := kernelHolder(f, locks); pid > 0 {
		return pid
	}
	pid := filePID(f)
	if pid > 0 && !alive(pid) {
		return 0
	}
	return pid
}

// filePID reads the PID the holder wrote, or 0 if the file does not hold
// one (yet: the holder may be between flock and write).
func filePID(f *os.File) int {
	buf := make([]byte, 32)
	n, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(buf[:n])))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// alive reports whether a process with this PID exists (signal 0 checks
// without sending; EPERM means it exists under another user).
func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// kernelHolder finds the FLOCK that holds f's inode in locks, a file in the
// format of /proc/locks, and returns its PID; 0 when there is none or the
// table cannot be read. A line reads
//
//	1: FLOCK  ADVISORY  WRITE 18263 fe:00:9989021 0 EOF
//
// with the device's major and minor numbers in hex and the inode in
// decimal; waiters' lines ("1: -> FLOCK ...") are skipped.
func kernelHolder(f *os.File, locks string) int {
	fi, err := f.Stat()
	if err != nil {
		return 0
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0
	}
	id := fmt.Sprintf("%02x:%02x:%d", unix.Major(uint64(st.Dev)), unix.Minor(uint64(st.Dev)), st.Ino)
	table, err := os.Open(locks)
	if err != nil {
		return 0
	}
	defer table.Close()
	sc := bufio.NewScanner(io.LimitReader(table, 4<<20))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[1] != "FLOCK" || fields[5] != id {
			continue
		}
		if pid, err := strconv.Atoi(fields[4]); err == nil && pid > 0 {
			return pid
		}
	}
	return 0
}

// held records the holder's PID in the locked file and wraps it in a Lock.
// The PID is only a hint for operators and for the ErrLocked message, so a
// failed write (full disk) does not undo an acquired lock.
func held(f *os.File, path string) *Lock {
	if f.Truncate(0) == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &Lock{path: path, f: f}
}
