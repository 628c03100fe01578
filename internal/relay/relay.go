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

	"golang.org/x/crypto/ssh"

	"paradigm/internal/identity"
	"paradigm/internal/lockfile"
	"paradigm/internal/logthrottle"
	"paradigm/internal/mux"
	"paradigm/internal/store"
)

// Relay serves playnodes on one port and owns every portalias listener.
// Its live state is the registry's; see the package doc for the pieces and
// the lock order.
type Relay struct {
	cfg     Config
	log     *slog.Logger
	hostKey ssh.Signer
	store   store.Store
	lock    *lockfile.Lock
	ln      net.Listener
	quic    *mux.QUICListener // nil unless QUICListen is set
	ctx     context.Context   // cancelled when Run returns
	wg      sync.WaitGroup    // every goroutine the relay starts, and every live session until its end is handled
	subWG   sync.WaitGroup    // event subscribers, which end when the bus closes after wg
	hsSlots chan struct{}     // bounds handshakes in progress
	unauth  unauthCounter     // connections not yet authenticated, by source address

	// Enrollment (enroll.go). authMu serialises reading the authorized-nodes
	// file with installing it (reloadAuthorized), so the set installed last
	// is the one read last; it is taken before registry.mu.
	enrollRate enrollLimiter
	authMu     sync.Mutex
	nextKeys   nextHostKeys // hostkey.go

	docs     store.Docs // Config.Docs, or the flat files in DataDir (see Site)
	authText []byte     // the authorized-nodes text installed last; under authMu

	// applyMu serialises committing assignments to the store with applying
	// them, so tables are applied in commit order. Lock order: applyMu ->
	// registry.mu. It is held across the store's Update, which is a network
	// call to a shared store (etcd): so a hello takes it only when it needs
	// a new portalias, and gives up at its deadline (LockCtx); no write to
	// a playnode or client happens under it.
	applyMu ctxMutex
	reg     *registry

	// throttle takes the log lines that peers cause (refused and failed
	// connections), so that no attacker gets a log line cheaper than the
	// relay writes it.
	throttle *logthrottle.Limiter

	statusFailing bool         // owned by the status writer, then by shutdown
	mirrored      *store.Table // the table flushMirror wrote last; the status writer's too

	// The cluster, when the store is shared (cluster.go, mesh.go); all nil
	// when the relay is alone.
	cluster  store.Cluster
	presence *presence
	mesh     *mesh
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
		cfg:     cfg,
		log:     cfg.Logger,
		lock:    lock,
		store:   cfg.Store,
		hsSlots: make(chan struct{}, cfg.MaxHandshakes),
		applyMu: make(ctxMutex, 1),

		throttle: logthrottle.New(cfg.Logger, logthrottle.Config{PerReason: cfg.PeerLogLines}),
	}
	if r.store == nil {
		r.store = &store.File{Path: filepath.Join(cfg.DataDir, PortaliasFile), PollInterval: cfg.ReloadInterval}
	}
	if r.docs = cfg.Docs; r.docs == nil {
		r.docs = fileDocs(cfg.DataDir, min(cfg.ReloadInterval, revokePoll))
	}
	if err := r.load(); err != nil {
		lock.Release()
		return nil, err
	}
	if c, ok := r.store.(store.Cluster); ok {
		if r.cfg.Advertise == "" {
			r.cfg.Advertise = r.ln.Addr().String()
		}
		r.cluster = c
		r.reg.self = r.cfg.Advertise
		r.mesh = &mesh{r: r, links: map[string]*meshLink{}}
		r.presence = newPresence(c, r.log, func(s *nodeSession, by store.Home) {
			r.homeActions([]homeAction{{replaced: s, by: by}})
		}, r.reg.clusterStore)
	}
	return r, nil
}

func (r *Relay) load() error {
	var err error
	if r.hostKey, err = identity.LoadOrCreate(filepath.Join(r.cfg.DataDir, HostKeyFile), "paradigm-relay"); err != nil {
		return fmt.Errorf("host key: %w", err)
	}
	auth, err := r.loadAuthorized()
	if err != nil {
		return err
	}
	table, err := r.store.Load(context.Background())
	if err != nil {
		return err
	}
	r.reg = newRegistry(auth, store.New())
	if doc, err := readStatus(r.statusPath()); err == nil {
		r.reg.restore(doc)
	} else if !os.IsNotExist(err) {
		r.log.Warn("status file unreadable, last seen times start afresh", "err", err)
	}
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
	r.applyMu.Lock()
	r.apply(table, nil)
	r.applyMu.Unlock()
	return nil
}

func (r *Relay) statusPath() string { return filepath.Join(r.cfg.DataDir, StatusFile) }

// Addr is the address playnodes dial, with the port resolved.
func (r *Relay) Addr() net.Addr { return r.ln.Addr() }

// QUICAddr is the UDP address of the QUIC listener, nil when QUIC is off.
func (r *Relay) QUICAddr() net.Addr {
	if r.quic == nil {
		return nil
	}
	return r.quic.Addr()
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
		"portaliases", r.reg.currentTable().Len(), "ports", fmt.Sprintf("%d-%d", r.cfg.PortLow, r.cfg.PortHigh), "bind", r.cfg.Bind,
		"procs", runtime.GOMAXPROCS(0)}
	logSub := r.reg.bus.subscribe(logEventBuffer)
	statusSub := r.reg.bus.subscribe(16)
	r.subWG.Go(func() { logEvents(r.log, logSub) })
	r.wg.Go(func() { writeStatus(ctx, statusSub, r.flushStatus) })
	r.flushStatus() // what a killed relay left said "online": not any more
	if r.quic != nil {
		attrs = append(attrs, "quic_addr", r.quic.Addr().String())
		r.wg.Go(func() { r.acceptQUIC(ctx) })
	}
	r.log.Info("relay listening", attrs...)
	r.checkPortRange(r.reg.currentTable())
	stop := context.AfterFunc(ctx, func() { r.ln.Close() })
	defer stop()
	r.wg.Go(func() { r.store.Watch(ctx, r.applyWatched) })
	r.wg.Go(func() { r.watchAuthorized(ctx) })
	r.wg.Go(func() { r.throttle.Run(ctx) })
	if r.cluster != nil {
		r.log.Info("relay joins its cluster", "cluster_id", r.cfg.Advertise)
		r.wg.Go(func() { r.runCluster(ctx) })
		r.wg.Go(func() { r.presence.run(ctx) })
	}
	err := r.acceptNodes(ctx)
	cancel()
	r.shutdown()
	if ctx.Err() != nil && errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// logEventBuffer is the log subscriber's buffer: a reconnection storm of
// this many playnodes is logged whole.
const logEventBuffer = 4096

// shutdown tells every playnode the relay is stopping, closes everything and
// waits for every goroutine.
func (r *Relay) shutdown() {
	listeners, sessions := r.reg.closeAll()
	for _, l := range listeners {
		l.ln.Close()
	}
	for _, s := range sessions {
		s.refuse(refuseShutdown)
	}
	r.mesh.closeAll()
	if r.quic != nil {
		r.quic.Close()
	}
	r.wg.Wait() // sessions ended (refusal sent, or grace over) and recorded
	r.reg.bus.close()
	r.subWG.Wait()
	r.flushStatus()
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
	listeners, _ := r.reg.closeAll()
	for _, l := range listeners {
		l.ln.Close()
	}
	r.wg.Wait()
	return r.lock.Release()
}

// ctxMutex is a mutex whose holder may wait on the network (a store
// update), so that a waiter can give up when its context ends instead of
// queueing behind it for good.
type ctxMutex chan struct{}

func (m ctxMutex) Lock()   { m <- struct{}{} }
func (m ctxMutex) Unlock() { <-m }

// LockCtx locks m, or returns ctx's error if it ends first.
func (m ctxMutex) LockCtx(ctx context.Context) error {
	select {
	case m <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
