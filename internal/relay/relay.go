package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"paradigm/internal/identity"
	"paradigm/internal/lockfile"
	"paradigm/internal/mux"
	"paradigm/internal/store"
)

// Relay serves playnodes on one port and owns every portalias listener.
type Relay struct {
	cfg     Config
	log     *slog.Logger
	hostKey ssh.Signer
	store   *store.File
	lock    *lockfile.Lock
	ln      net.Listener
	quic    *mux.QUICListener // nil unless QUICListen is set
	ctx     context.Context   // cancelled when Run returns
	wg      sync.WaitGroup    // every goroutine the relay starts, and every live session until its end is handled
	hsSlots chan struct{}     // bounds handshakes in progress
	unauth  unauthCounter     // connections not yet authenticated, by source address

	authStamp, storeStamp fileStamp // the file versions load read

	storeMu sync.Mutex // serialises store updates with applying their result

	mu         sync.Mutex
	auth       *authorizedSet
	table      *store.Table
	sessions   map[string]*nodeSession // online playnodes by name
	listeners  map[uint16]*portListener
	bindFailed map[uint16]bool      // portaliases whose port was busy, logged once
	closing    bool                 // shutdown began: bind nothing more
	busyPorts  map[uint16]time.Time // free in the table but in use by another program, since
	status     *statusBook
}

// New prepares a relay: it takes the data folder's lock, loads (or creates)
// the host key, reads the authorized-nodes and portalias files, and binds the
// relay port and every known portalias. Any malformed file stops it here,
// naming file:line. Run serves; Close releases what New took if Run is never
// called.
func New(cfg Config) (*Relay, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data folder: %w", err)
	}
	lock, err := lockfile.TryAcquire(filepath.Join(cfg.DataDir, LockFile))
	if err != nil {
		if errors.Is(err, lockfile.ErrLocked) {
			return nil, fmt.Errorf("data folder %s is in use by another relay: %w", cfg.DataDir, err)
		}
		return nil, err
	}
	r := &Relay{
		cfg:        cfg,
		log:        cfg.Logger,
		lock:       lock,
		store:      &store.File{Path: filepath.Join(cfg.DataDir, PortaliasFile)},
		hsSlots:    make(chan struct{}, cfg.MaxHandshakes),
		sessions:   map[string]*nodeSession{},
		listeners:  map[uint16]*portListener{},
		bindFailed: map[uint16]bool{},
		busyPorts:  map[uint16]time.Time{},
	}
	if err := r.load(); err != nil {
		lock.Release()
		return nil, err
	}
	return r, nil
}

func (r *Relay) load() error {
	var err error
	if r.hostKey, err = identity.LoadOrCreate(filepath.Join(r.cfg.DataDir, HostKeyFile), "paradigm-relay"); err != nil {
		return fmt.Errorf("host key: %w", err)
	}
	// Stamps first: an edit after them is picked up by watch.
	r.authStamp = stampOf(filepath.Join(r.cfg.DataDir, AuthorizedFile))
	r.storeStamp = stampOf(r.store.Path)
	if r.auth, err = loadAuthorized(filepath.Join(r.cfg.DataDir, AuthorizedFile)); err != nil {
		return err
	}
	if r.table, err = r.store.Load(); err != nil {
		return err
	}
	r.status = loadStatus(filepath.Join(r.cfg.DataDir, StatusFile), r.log)
	if !isLoopback(r.cfg.Bind) {
		r.log.Warn("portaliases are NOT bound to loopback: every service of every playnode is reachable from the network", "bind", r.cfg.Bind)
	}
	if r.ln, err = net.Listen("tcp", r.cfg.Listen); err != nil {
		return fmt.Errorf("listen for playnodes: %w", err)
	}
	if r.cfg.QUICListen != "" {
		if err := r.listenQUIC(); err != nil {
			r.ln.Close()
			return err
		}
	}
	r.syncListeners(r.table)
	return nil
}

// Addr is the address playnodes dial, with the port resolved.
func (r *Relay) Addr() net.Addr { return r.ln.Addr() }

// QUICAddr is the UDP address of the QUIC listener, nil when QUIC is off.
func (r *Relay) QUICAddr() net.Addr {
	if r.quic == nil {
		return nil
	}
	return r.quic.Addr()
}

// listenQUIC opens the QUIC listener with the host key as its identity.
func (r *Relay) listenQUIC() error {
	priv, err := identity.LoadEd25519(filepath.Join(r.cfg.DataDir, HostKeyFile))
	if err != nil {
		return fmt.Errorf("host key for quic: %w", err)
	}
	pconn, err := net.ListenPacket("udp", r.cfg.QUICListen)
	if err != nil {
		return fmt.Errorf("listen for playnodes (quic): %w", err)
	}
	r.quic, err = mux.ListenQUIC(pconn, &mux.QUICServerConfig{
		HostKey:          priv,
		Authorize:        r.authorize,
		HandshakeTimeout: r.cfg.HandshakeTimeout,
		Admit:            r.admitQUIC,
		Options:          mux.Options{Keepalive: r.cfg.Keepalive, Logger: r.log},
	})
	if err != nil {
		return fmt.Errorf("listen for playnodes (quic): %w", err)
	}
	return nil
}

// acceptQUIC serves QUIC sessions until the listener closes. A peer that
// fails authentication is logged and the listener goes on.
func (r *Relay) acceptQUIC(ctx context.Context) {
	for {
		s, peer, err := r.quic.Accept(ctx)
		if errors.Is(err, mux.ErrPeerHandshake) {
			r.log.Warn("playnode handshake failed", "transport", "quic", "err", err)
			continue
		}
		if err != nil {
			if ctx.Err() == nil {
				r.log.Error("quic listener stopped", "err", err)
			}
			return
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.serveSession(ctx, s, peer, r.log.With("remote", peer.Remote.String(), "transport", "quic"))
		}()
	}
}

// HostKey is the relay's public host key.
func (r *Relay) HostKey() ssh.PublicKey { return r.hostKey.PublicKey() }

// Run serves until ctx is cancelled, then disconnects every playnode, closes
// every portalias and releases the data folder. It returns nil on
// cancellation.
func (r *Relay) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	r.ctx = ctx
	attrs := []any{"addr", r.ln.Addr().String(), "fingerprint", identity.Fingerprint(r.hostKey.PublicKey()),
		"portaliases", r.table.Len(), "ports", fmt.Sprintf("%d-%d", r.cfg.PortLow, r.cfg.PortHigh), "bind", r.cfg.Bind,
		"procs", runtime.GOMAXPROCS(0)}
	if r.quic != nil {
		attrs = append(attrs, "quic_addr", r.quic.Addr().String())
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.acceptQUIC(ctx)
		}()
	}
	r.log.Info("relay listening", attrs...)
	stop := context.AfterFunc(ctx, func() { r.ln.Close() })
	defer stop()

	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.watch(ctx)
	}()
	err := r.acceptNodes(ctx)
	cancel()
	r.shutdown()
	if ctx.Err() != nil && errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// acceptNodes accepts playnode connections until the listener closes.
func (r *Relay) acceptNodes(ctx context.Context) error {
	var delay time.Duration
	for {
		conn, err := r.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// EMFILE and friends: back off instead of spinning.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			r.log.Warn("accept playnode connection", "err", err)
			select {
			case <-time.After(delay):
			case <-ctx.Done():
			}
			continue
		}
		delay = 0
		src, ok := r.unauth.acquire(conn.RemoteAddr(), r.cfg.MaxUnauthPerAddress)
		if !ok {
			if src.IsValid() {
				r.log.Warn("too many unauthenticated connections from one address, closed", "remote", conn.RemoteAddr().String(), "limit", r.cfg.MaxUnauthPerAddress)
			}
			conn.Close()
			continue
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.serveNode(ctx, conn, func() { r.unauth.release(src) })
		}()
	}
}

// shutdown tells every playnode the relay is stopping, closes everything and
// waits for every goroutine.
func (r *Relay) shutdown() {
	r.mu.Lock()
	r.closing = true
	sessions := make([]*nodeSession, 0, len(r.sessions))
	for _, s := range r.sessions {
		sessions = append(sessions, s)
	}
	for port, l := range r.listeners {
		l.close()
		delete(r.listeners, port)
	}
	r.mu.Unlock()
	var refused sync.WaitGroup
	for _, s := range sessions {
		refused.Go(func() { s.refuse(refuseShutdown) })
	}
	refused.Wait()
	if r.quic != nil {
		r.quic.Close()
	}
	r.wg.Wait()
	r.status.markAllOffline(time.Now())
	r.status.flush()
	r.lock.Release()
}

// Close releases the data folder and listeners of a relay whose Run was
// never called.
func (r *Relay) Close() error {
	if r.ctx != nil {
		return errors.New("relay is running: cancel Run's context instead")
	}
	r.ln.Close()
	if r.quic != nil {
		r.quic.Close()
	}
	r.mu.Lock()
	for port, l := range r.listeners {
		l.close()
		delete(r.listeners, port)
	}
	r.closing = true
	r.mu.Unlock()
	r.wg.Wait()
	return r.lock.Release()
}

// serverConfig is the transport configuration for one accepted connection.
func (r *Relay) serverConfig() *mux.SSHServerConfig {
	return &mux.SSHServerConfig{
		HostKey:          r.hostKey,
		Authorize:        r.authorize,
		HandshakeTimeout: r.cfg.HandshakeTimeout,
		Options: mux.Options{
			Keepalive: r.cfg.Keepalive,
			Logger:    r.log,
		},
	}
}

// authorize maps a node's key to the playnode it is bound to. Unknown keys
// are logged with their fingerprint so the operator can authorize them.
func (r *Relay) authorize(remote net.Addr, user string, key ssh.PublicKey) (string, error) {
	r.mu.Lock()
	name, ok := r.auth.lookup(key)
	r.mu.Unlock()
	if !ok {
		r.log.Warn("unknown node key refused", "remote", remote.String(), "user", user,
			"fingerprint", identity.Fingerprint(key), "authorize", fmt.Sprintf("paradigm-relay authorize --data %s %s '%s'", r.cfg.DataDir, safeUser(user), identity.PublicLine(key, "")))
		return "", fmt.Errorf("key %s is not authorized", identity.Fingerprint(key))
	}
	return name, nil
}

// safeUser is the claimed name for the authorize hint, or a placeholder
// when the claim is not a valid playnode name.
func safeUser(user string) string {
	if err := validPlaynode(user); err != nil {
		return "NAME"
	}
	return user
}
