package etcdstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// etcdBinary is where Debian's etcd-server package installs the server;
// .ci/run installs it.
const etcdBinary = "/usr/bin/etcd"

// startWait bounds how long etcd may take to become healthy.
const startWait = 30 * time.Second

// etcdServer is a real etcd on 127.0.0.1 with a temporary data folder,
// one member, stopped at cleanup.
type etcdServer struct {
	t          *testing.T
	dir        string
	data       string
	client     string // host:port
	peer       string
	cmd        *exec.Cmd
	exited     chan struct{}
	log        bytes.Buffer
	stoppedLog []byte
}

// startEtcd starts etcd, or skips the test when the binary is missing
// outside CI; under CI (CI=true) a missing etcd fails the test.
func startEtcd(t *testing.T) *etcdServer {
	t.Helper()
	if _, err := os.Stat(etcdBinary); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("etcd server missing (%v): .ci/run installs Debian's etcd-server", err)
		}
		t.Skipf("etcd server missing (%v): apt-get install etcd-server to run the etcd store tests", err)
	}
	e := &etcdServer{t: t, dir: t.TempDir()}
	t.Cleanup(e.stop)
	// The ports are picked free and handed to etcd, which binds them a
	// moment later; if another process took one meanwhile, etcd exits and
	// we try other ports.
	var err error
	for i := range 3 {
		e.client, e.peer = freePort(t), freePort(t)
		e.data = filepath.Join(e.dir, fmt.Sprint("data", i))
		if err = e.run(); err == nil {
			return e
		}
	}
	t.Fatalf("start etcd: %v\n%s", err, e.stoppedLog)
	return nil
}

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// run starts etcd on e's ports and data folder and waits until it is
// healthy or has exited.
func (e *etcdServer) run() error {
	e.log.Reset()
	e.cmd = exec.Command(etcdBinary,
		"--name", "test",
		"--data-dir", e.data,
		"--listen-client-urls", "http://"+e.client,
		"--advertise-client-urls", "http://"+e.client,
		"--listen-peer-urls", "http://"+e.peer,
		"--initial-advertise-peer-urls", "http://"+e.peer,
		"--initial-cluster", "test=http://"+e.peer,
		"--initial-cluster-state", "new",
	)
	e.cmd.Stdout, e.cmd.Stderr = &e.log, &e.log
	if err := e.cmd.Start(); err != nil {
		return err
	}
	e.exited = make(chan struct{})
	go func() { e.cmd.Wait(); close(e.exited) }()
	deadline := time.Now().Add(startWait)
	for time.Now().Before(deadline) {
		if e.healthy() {
			return nil
		}
		select {
		case <-e.exited:
			e.stoppedLog = e.log.Bytes()
			return fmt.Errorf("etcd exited: %v", e.cmd.ProcessState)
		case <-time.After(50 * time.Millisecond): // polling a condition, under a deadline
		}
	}
	e.kill()
	return errors.New("etcd not healthy within " + startWait.String())
}

func (e *etcdServer) healthy() bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+e.client+"/health", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// kill sends SIGKILL and waits for etcd to be gone.
func (e *etcdServer) kill() {
	if e.cmd == nil || e.cmd.Process == nil {
		return
	}
	select {
	case <-e.exited:
		return
	default:
	}
	e.cmd.Process.Signal(syscall.SIGKILL)
	<-e.exited
}

// restart starts etcd again on the same ports and data folder.
func (e *etcdServer) restart() {
	e.t.Helper()
	if err := e.run(); err != nil {
		e.t.Fatalf("restart etcd: %v\n%s", err, e.stoppedLog)
	}
}

func (e *etcdServer) stop() { e.kill() }
