//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// systemdInit is the first process of the machine bootSystemd starts, run
// by `unshare --fork` in fresh PID, mount, UTS, IPC, network and cgroup
// namespaces; $1 is a folder of files to stage in /run/paradigm-e2e/bin. It
// gives systemd what a container manager such as systemd-nspawn gives it,
// and keeps the host out of reach: /etc, /var and /usr/local are overlays
// whose changes live in a tmpfs; /run, /tmp and /dev are its own; /sys and
// /proc/sys are read-only (no sysctl, no udev on the host's devices);
// cgroup2 is mounted on the cgroup namespace's root, the folder the test
// created; timers are masked (no apt or man-db runs); and systemd, so every
// service, loses the capabilities that act on the whole host (modules,
// clock, raw I/O, reboot). Mounts are made shared once set up: systemd
// makes / shared itself only outside a container, and moves each
// service's credentials into place through that propagation.
const systemdInit = `set -eu
stage=/run/paradigm-e2e
mount --make-rprivate /
mount -t tmpfs -o mode=755 tmpfs /run
mkdir $stage
mount -t tmpfs -o mode=700 tmpfs $stage
mkdir $stage/bin
cp "$1"/* $stage/bin/
for d in etc var usr/local; do
	n=$(echo $d | tr / _)
	mkdir $stage/$n.upper $stage/$n.work
	mount -t overlay overlay -o lowerdir=/$d,upperdir=$stage/$n.upper,workdir=$stage/$n.work /$d
done
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t proc proc /proc
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
mount -t sysfs -o ro sysfs /sys
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tmpfs -o mode=755 tmpfs /dev
mknod -m 666 /dev/null c 1 3
mknod -m 666 /dev/zero c 1 5
mknod -m 666 /dev/full c 1 7
mknod -m 666 /dev/random c 1 8
mknod -m 666 /dev/urandom c 1 9
mknod -m 666 /dev/tty c 5 0
mkdir /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts /dev/pts
ln -s pts/ptmx /dev/ptmx
ln -s /proc/self/fd /dev/fd
mount --make-rshared /
ln -s /dev/null /etc/systemd/system/timers.target
export container=paradigm-e2e
exec setpriv --bounding-set -sys_module,-sys_time,-sys_rawio,-syslog,-mac_admin,-mac_override,-wake_alarm,-block_suspend,-sys_pacct,-sys_boot,-bpf,-perfmon \
	/lib/systemd/systemd --system --log-target=journal --unit=basic.target
`

// systemdPath is the system manager bootSystemd runs as PID 1.
const systemdPath = "/lib/systemd/systemd"

// machine is a systemd booted by bootSystemd: PID 1 of its own namespaces.
type machine struct {
	pid  int    // PID 1 of the machine, as this test's namespace sees it
	repo string // the repository's root, the working folder of run
}

// requireSystemdBoot fails the test under CI, and skips it elsewhere, when
// this machine cannot boot a systemd for it: not root, or a program
// missing (systemd from Debian's systemd package, unshare, nsenter and
// setpriv from util-linux, which .ci/run installs or Debian always has).
func requireSystemdBoot(t *testing.T) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	if _, err := os.Stat(systemdPath); err != nil {
		missing = append(missing, systemdPath+" (Debian package systemd)")
	}
	for _, prog := range []string{"unshare", "nsenter", "setpriv", "systemctl", "journalctl"} {
		if _, err := exec.LookPath(prog); err != nil {
			missing = append(missing, prog)
		}
	}
	if len(missing) == 0 {
		return
	}
	why := "booting a systemd needs " + strings.Join(missing, ", ")
	if os.Getenv("CI") != "" {
		t.Fatal(why)
	}
	t.Skip(why)
}

// bootSystemd boots a real systemd as PID 1 of new namespaces (see
// systemdInit), with the files of stage in its /run/paradigm-e2e/bin, and
// waits until it has reached basic.target. The machine is killed when the
// test ends, with every process it started, and its cgroup removed; its
// mounts and network end with its namespaces. Nothing it writes reaches
// the host's folders.
func bootSystemd(t *testing.T, stage string) *machine {
	t.Helper()
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	cgroup := newCgroup(t)
	dir, err := os.Open(cgroup)
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()

	var console bytes.Buffer
	cmd := exec.Command("unshare", "--pid", "--fork", "--kill-child", "--mount", "--uts", "--ipc", "--net", "--cgroup",
		"sh", "-c", systemdInit, "init", stage)
	cmd.Stdout, cmd.Stderr = &console, &console
	// unshare starts in the test's cgroup, so its cgroup namespace is
	// rooted there; killed with this test's process, it kills PID 1.
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(dir.Fd()), Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("unshare: %v", err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	m := &machine{repo: repo}
	t.Cleanup(func() {
		if t.Failed() && m.pid != 0 {
			m.dumpJournal(t)
		}
		cmd.Process.Kill()
		<-done
		removeCgroup(t, cgroup)
		if t.Failed() {
			t.Logf("--- init's output:\n%s", console.String())
		}
	})

	children := fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid)
	m.poll(t, "unshare to fork PID 1", func() bool {
		data, _ := os.ReadFile(children)
		m.pid, _ = strconv.Atoi(strings.TrimSpace(string(data)))
		return m.pid > 0
	})
	var state string
	m.poll(t, "systemd to boot", func() bool {
		select {
		case <-done:
			t.Fatalf("PID 1 exited while booting:\n%s", console.String())
		default:
		}
		state = strings.TrimSpace(m.sh(t, "systemctl is-system-running || true"))
		return state == "running" || state == "degraded"
	})
	if state == "degraded" {
		t.Logf("systemd booted degraded (units of this machine failed):\n%s", m.sh(t, "systemctl --failed --no-pager"))
	}
	return m
}

// poll is waitUntil at a tenth of a second: each try of most conditions
// starts processes in the machine.
func (m *machine) poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", waitTimeout, what)
		}
		time.Sleep(100 * time.Millisecond) // polling interval, not synchronisation
	}
}

// run runs script with bash -eu (root's shell) in the machine's namespaces, as root, in the
// repository's root folder, bounded by waitTimeout; it returns stdout and
// stderr, and an error when sh fails.
func (m *machine) run(script string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(ctx, "nsenter", "--target", strconv.Itoa(m.pid),
		"--mount", "--uts", "--ipc", "--net", "--pid", "--cgroup", "--wd="+m.repo,
		"bash", "-euc", script)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0"}
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.WaitDelay = 5 * time.Second
	err = cmd.Run()
	if err != nil {
		err = fmt.Errorf("bash -euc %q in the machine: %w\nstdout:\n%s\nstderr:\n%s", script, err, out.String(), errOut.String())
	}
	return out.String(), errOut.String(), err
}

// sh runs script (see run) and returns its stdout; it fails the test if the
// script does.
func (m *machine) sh(t *testing.T, script string) string {
	t.Helper()
	out, _, err := m.run(script)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// dumpJournal logs what systemd saw, for a failed test.
func (m *machine) dumpJournal(t *testing.T) {
	t.Helper()
	for _, script := range []string{"systemctl --failed --no-pager", "journalctl --no-pager -b -n 300"} {
		out, errOut, err := m.run(script)
		t.Logf("--- %s (%v):\n%s%s", script, err, out, errOut)
	}
}

// newCgroup creates an empty cgroup under this test's own in the cgroup2
// hierarchy, the root of the machine's cgroup namespace.
func newCgroup(t *testing.T) string {
	t.Helper()
	mount, err := cgroup2Mount()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	var own string
	for _, line := range strings.Split(string(data), "\n") {
		if path, ok := strings.CutPrefix(line, "0::"); ok {
			own = path
		}
	}
	parent := filepath.Join(mount, own)
	removeStaleCgroups(t, parent)
	dir := filepath.Join(parent, cgroupPrefix+strconv.Itoa(os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("create the machine's cgroup: %v", err)
	}
	return dir
}

// cgroupPrefix starts the name of a machine's cgroup; the test process's
// PID ends it.
const cgroupPrefix = "paradigm-e2e-systemd-"

// removeStaleCgroups removes the cgroups of machines whose test process was
// killed before its cleanup ran (PID 1 died with it: see bootSystemd).
func removeStaleCgroups(t *testing.T, parent string) {
	t.Helper()
	entries, _ := os.ReadDir(parent)
	for _, e := range entries {
		pid, ok := strings.CutPrefix(e.Name(), cgroupPrefix)
		if !ok || !e.IsDir() {
			continue
		}
		if _, err := os.Stat("/proc/" + pid); err == nil {
			continue // a test process that still runs
		}
		removeCgroup(t, filepath.Join(parent, e.Name()))
	}
}

// cgroup2Mount returns where the cgroup2 hierarchy is mounted (on a host
// with cgroup v1 too, often /sys/fs/cgroup/unified).
func cgroup2Mount() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [TAGS...] - FSTYPE SOURCE SUPER
		fields := strings.Fields(sc.Text())
		sep := slices.Index(fields, "-")
		if sep > 4 && sep+1 < len(fields) && fields[sep+1] == "cgroup2" {
			return fields[4], nil
		}
	}
	return "", errors.New("no cgroup2 hierarchy mounted (see /proc/self/mountinfo): booting a systemd needs one")
}

// removeCgroup waits until every process of the machine has exited, then
// removes its cgroup and those systemd created below it.
func removeCgroup(t *testing.T, dir string) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		events, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
		if err != nil || bytes.Contains(events, []byte("populated 0")) {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("processes of the machine still run %v after it was killed (cgroup %s)", waitTimeout, dir)
			return
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
	}
	var dirs []string
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	slices.Reverse(dirs) // children first
	for _, d := range dirs {
		if err := os.Remove(d); err != nil {
			t.Errorf("remove the machine's cgroup: %v", err)
		}
	}
}
