// Package etcdtest starts a real etcd server for tests: Debian's
// etcd-server package, on 127.0.0.1, one member, a temporary data folder.
package etcdtest

import (
	"bytes"
	"context"
	"crypto/tls"
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

// Binary is where Debian's etcd-server package installs the server;
// .ci/run installs it.
const Binary = "/usr/bin/etcd"

// startWait bounds how long etcd may take to become healthy.
const startWait = 30 * time.Second

// Server is a real etcd on 127.0.0.1 with a temporary data folder, one
// member, stopped at cleanup.
type Server struct {
	// Client is the address clients dial, HOST:PORT.
	Client string

	t          testing.TB
	tls        *TLS // nil: plain TCP
	dir        string
	data       string
	peer       string
	cmd        *exec.Cmd
	exited     chan struct{}
	log        bytes.Buffer
	stoppedLog []byte
}

// Start starts etcd, or skips the test when the binary is missing
// outside CI; under CI (CI=true) a missing etcd fails the test.
func Start(t testing.TB) *Server {
	t.Helper()
	return start(t, nil)
}

// TLS is etcd's side of TLS with client certificate authentication.
type TLS struct {
	CertFile, KeyFile string // etcd's server certificate, for 127.0.0.1
	ClientCAFile      string // the CA that signs the clients' certificates
	// Client is a client's configuration, for Start's health check.
	Client *tls.Config
}

// StartTLS is Start with etcd serving clients over TLS and requiring a
// client certificate signed by tlsFiles.ClientCAFile.
func StartTLS(t testing.TB, tlsFiles TLS) *Server {
	t.Helper()
	return start(t, &tlsFiles)
}

func start(t testing.TB, tlsFiles *TLS) *Server {
	t.Helper()
	if _, err := os.Stat(Binary); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("etcd server missing (%v): .ci/run installs Debian's etcd-server", err)
		}
		t.Skipf("etcd server missing (%v): apt-get install etcd-server to run the etcd store tests", err)
	}
	e := &Server{t: t, tls: tlsFiles, dir: t.TempDir()}
	t.Cleanup(e.Kill)
	// The ports are picked free and handed to etcd, which binds them a
	// moment later; if another process took one meanwhile, etcd exits and
	// we try other ports.
	var err error
	for i := range 3 {
		e.Client, e.peer = freePort(t), freePort(t)
		e.data = filepath.Join(e.dir, fmt.Sprint("data", i))
		if err = e.run(); err == nil {
			return e
		}
	}
	t.Fatalf("start etcd: %v\n%s", err, e.stoppedLog)
	return nil
}

func freePort(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// run starts etcd on e's ports and data folder and waits until it is
// healthy or has exited.
func (e *Server) run() error {
	e.log.Reset()
	args := []string{
		"--name", "test",
		"--data-dir", e.data,
		"--listen-client-urls", e.scheme() + e.Client,
		"--advertise-client-urls", e.scheme() + e.Client,
		"--listen-peer-urls", "http://" + e.peer,
		"--initial-advertise-peer-urls", "http://" + e.peer,
		"--initial-cluster", "test=http://" + e.peer,
		"--initial-cluster-state", "new",
	}
	if e.tls != nil {
		args = append(args, "--cert-file", e.tls.CertFile, "--key-file", e.tls.KeyFile,
			"--client-cert-auth", "--trusted-ca-file", e.tls.ClientCAFile)
	}
	e.cmd = exec.Command(Binary, args...)
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
	e.Kill()
	return errors.New("etcd not healthy within " + startWait.String())
}

func (e *Server) scheme() string {
	if e.tls != nil {
		return "https://"
	}
	return "http://"
}

func (e *Server) healthy() bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.scheme()+e.Client+"/health", nil)
	client := http.DefaultClient
	if e.tls != nil {
		client = &http.Client{Transport: &http.Transport{TLSClientConfig: e.tls.Client}}
		defer client.CloseIdleConnections()
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Kill sends SIGKILL and waits for etcd to be gone.
func (e *Server) Kill() {
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

// Restart starts etcd again on the same ports and data folder.
func (e *Server) Restart() {
	e.t.Helper()
	if err := e.run(); err != nil {
		e.t.Fatalf("restart etcd: %v\n%s", err, e.stoppedLog)
	}
}
