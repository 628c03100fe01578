package node

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"paradigm/internal/identity"
	"paradigm/internal/mux"
	"paradigm/internal/proto"
)

// fakeRelay accepts one playnode session over transport, answers its hello
// with a welcome and hands the session to the test, which then acts as the
// relay would.
func fakeRelay(t *testing.T, transport string) (addr string, host ssh.Signer, sessions <-chan mux.Session) {
	t.Helper()
	keyFile := filepath.Join(t.TempDir(), "host")
	host, err := identity.GenerateKey(keyFile, "")
	if err != nil {
		t.Fatal(err)
	}
	authorize := func(net.Addr, string, ssh.PublicKey) (string, error) { return "dev1", nil }
	var accept func(context.Context) (mux.Session, error)
	var closeListener func() error
	if transport == TransportQUIC {
		priv, err := identity.LoadEd25519(keyFile)
		if err != nil {
			t.Fatal(err)
		}
		pconn, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, err := mux.ListenQUIC(pconn, &mux.QUICServerConfig{HostKey: priv, Authorize: authorize})
		if err != nil {
			t.Fatal(err)
		}
		addr, closeListener = ln.Addr().String(), ln.Close
		accept = func(ctx context.Context) (mux.Session, error) {
			sess, _, err := ln.Accept(ctx)
			return sess, err
		}
	} else {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr, closeListener = ln.Addr().String(), ln.Close
		accept = func(ctx context.Context) (mux.Session, error) {
			conn, err := ln.Accept()
			if err != nil {
				return nil, err
			}
			sess, _, err := mux.AcceptSSH(ctx, conn, &mux.SSHServerConfig{HostKey: host, Authorize: authorize})
			return sess, err
		}
	}
	ch := make(chan mux.Session, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() {
		cancel()
		closeListener()
		<-done
	})
	go func() {
		defer close(done)
		sess, err := accept(ctx)
		if err != nil {
			if ctx.Err() == nil {
				t.Errorf("fake relay: %v", err)
			}
			return
		}
		t.Cleanup(func() { sess.Close() })
		ctrl, err := sess.AcceptStream(ctx)
		if err != nil {
			t.Errorf("fake relay: accept control stream: %v", err)
			return
		}
		m, err := proto.ReadMessage(ctrl)
		if err != nil {
			t.Errorf("fake relay: read hello: %v", err)
			return
		}
		var ps []proto.Portalias
		for i, s := range m.(*proto.Hello).Services {
			ps = append(ps, proto.Portalias{Service: s.Name, Portalias: uint16(40000 + i)})
		}
		if err := proto.WriteMessage(ctrl, &proto.Welcome{Version: proto.Version, Playnode: "dev1", Portaliases: ps}); err != nil {
			t.Errorf("fake relay: write welcome: %v", err)
			return
		}
		ch <- sess
	}()
	return addr, host, ch
}

// acceptCounter is a local listener that reports every connection to it.
func acceptCounter(t *testing.T) (addr string, accepted <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan struct{}, 16)
	done := make(chan struct{})
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("served"))
			c.Close()
			ch <- struct{}{}
		}
	}()
	return ln.Addr().String(), ch
}

// TestNodeDialsOnlyItsServices plays a relay that asks the node for things
// outside its configuration: the node must answer without dialling.
func TestNodeDialsOnlyItsServices(t *testing.T) {
	forEachTransport(t, func(t *testing.T, transport string) {
		addr, host, sessions := fakeRelay(t, transport)
		webAddr, webAccepted := acceptCounter(t)
		secretAddr, secretAccepted := acceptCounter(t)
		_, secretPort, _ := net.SplitHostPort(secretAddr)
		startNode(t, Config{Relay: addr, Transport: transport, Fingerprint: identity.Fingerprint(host.PublicKey()), KeyFile: newKey(t, "dev1"),
			Name: "dev1", Services: []Service{{"web", webAddr}}})
		var sess mux.Session
		select {
		case sess = <-sessions:
		case <-time.After(waitTimeout):
			t.Fatal("the node did not connect to the fake relay")
		}

		open := func(header []byte) mux.Stream {
			t.Helper()
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			st, err := sess.OpenStream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			st.SetDeadline(time.Now().Add(waitTimeout))
			if _, err := st.Write(header); err != nil {
				t.Fatal(err)
			}
			return st
		}

		// Names the node does not have, including the secret service's port and
		// address, get UnknownService or a closed stream, and no dial.
		for _, name := range []string{"secret", "ssh", secretPort} {
			st := open(proto.AppendStreamHeader(nil, name))
			var se *proto.StreamError
			if err := proto.ReadStreamStatus(st); !errors.As(err, &se) || se.Status != proto.StatusUnknownService {
				t.Errorf("service %q: got status %v, want %s", name, err, proto.StatusUnknownService)
			}
		}
		for _, header := range [][]byte{
			proto.AppendStreamHeader(nil, secretAddr), // ':' is not allowed in a name
			{proto.StreamVersion + 1, 3, 'w', 'e', 'b'},
			{proto.StreamVersion, 0},
		} {
			st := open(header)
			if n, err := io.ReadAll(st); len(n) != 0 || err != nil {
				t.Errorf("header %q: got %q, %v; want the stream closed without a status", header, n, err)
			}
		}

		// The configured service is dialled: the positive control.
		st := open(proto.AppendStreamHeader(nil, "web"))
		if err := proto.ReadStreamStatus(st); err != nil {
			t.Fatalf("web: status %v, want ok", err)
		}
		if got, err := io.ReadAll(st); err != nil || string(got) != "served" {
			t.Fatalf("web: got %q, %v, want %q", got, err, "served")
		}
		select {
		case <-webAccepted:
		case <-time.After(waitTimeout):
			t.Fatal("web was not dialled")
		}
		select {
		case <-secretAccepted:
			t.Fatal("the node dialled a service that is not in its configuration")
		default:
		}
	})
}
