package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// etcdBinary is where Debian's etcd-server package installs the server.
const etcdBinary = "/usr/bin/etcd"

// etcdServer is one etcd member on 127.0.0.1 with a data folder under the
// run's temporary folder, as internal/store/etcdstore/etcdtest starts it
// for tests (which needs a testing.TB, so it is not used here).
type etcdServer struct {
	client string // HOST:PORT clients dial
	cmd    *exec.Cmd
	exited chan struct{}
}

// startEtcd starts etcd on free loopback ports and waits until it reports
// healthy; a port taken between probing and binding makes etcd exit, and
// then other ports are tried.
func startEtcd(ctx context.Context, dir string) (*etcdServer, error) {
	if _, err := os.Stat(etcdBinary); err != nil {
		return nil, fmt.Errorf("etcd server missing (%v): apt-get install etcd-server", err)
	}
	var err error
	for i := range 3 {
		var e *etcdServer
		if e, err = runEtcd(ctx, filepath.Join(dir, fmt.Sprint("etcd", i))); err == nil {
			return e, nil
		}
	}
	return nil, err
}

func runEtcd(ctx context.Context, dir string) (*etcdServer, error) {
	client, err := freeAddr("127.0.0.1")
	if err != nil {
		return nil, err
	}
	peer, err := freeAddr("127.0.0.1")
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	log, err := os.Create(dir + ".log")
	if err != nil {
		return nil, err
	}
	defer log.Close()
	e := &etcdServer{client: client, exited: make(chan struct{})}
	e.cmd = command(ctx, etcdBinary,
		"--name", "bench", "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", "http://"+client, "--advertise-client-urls", "http://"+client,
		"--listen-peer-urls", "http://"+peer, "--initial-advertise-peer-urls", "http://"+peer,
		"--initial-cluster", "bench=http://"+peer, "--initial-cluster-state", "new")
	e.cmd.Stdout, e.cmd.Stderr = log, log
	if err := e.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start etcd: %w", err)
	}
	go func() { e.cmd.Wait(); close(e.exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if etcdHealthy(ctx, client) {
			return e, nil
		}
		select {
		case <-e.exited:
			return nil, fmt.Errorf("etcd exited: %v (log: %s.log)", e.cmd.ProcessState, dir)
		case <-time.After(50 * time.Millisecond): // polling a condition, under a deadline
		}
	}
	e.stop()
	return nil, errors.New("etcd not healthy within 30s")
}

func etcdHealthy(ctx context.Context, client string) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+client+"/health", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// stop kills etcd and waits for it.
func (e *etcdServer) stop() {
	e.cmd.Process.Signal(syscall.SIGKILL)
	<-e.exited
}
