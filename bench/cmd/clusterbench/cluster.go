package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"paradigm/internal/node"
	"paradigm/internal/store/etcdstore"
)

// cluster is the run's etcd, three relays, the device-side services and
// the playnodes, in this process.
type cluster struct {
	s      *settings
	etcd   *etcdServer
	relays []*relayProc
	svc    *services
	pns    []*playnode // the simulated ones, then the measured one
	fleet  *fleet
	nodes  []*simNode // simulated
	bench  *simNode   // the measured playnode
}

var relayHosts = []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"}

// startCluster starts etcd, authorizes every playnode's key in each
// relay's data folder, pins the portaliases in etcd, starts the relays
// and reads their idle RSS.
func startCluster(ctx context.Context, s *settings, res *results) (_ *cluster, err error) {
	c := &cluster{s: s}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	if c.etcd, err = startEtcd(ctx, s.tmp); err != nil {
		return nil, err
	}
	s.etcdAddr = c.etcd.client
	logf("etcd on %s", s.etcdAddr)
	if s.portLow, err = freeWindow(relayHosts, s.portFrom, s.nodes+len(benchServices)); err != nil {
		return nil, err
	}
	s.portHigh = s.portLow + s.nodes + len(benchServices) - 1
	keys := filepath.Join(s.tmp, "keys")
	if err := os.MkdirAll(keys, 0o700); err != nil {
		return nil, err
	}
	logf("generating %d playnode keys", s.nodes+1)
	if c.pns, err = makeKeys(keys, s.nodes, uint16(s.portLow)); err != nil {
		return nil, err
	}
	for i, h := range relayHosts {
		r, err := newRelay(ctx, s, string(rune('A'+i)), h)
		if err != nil {
			return nil, err
		}
		c.relays = append(c.relays, r)
	}
	es, err := etcdstore.Open([]string{s.etcdAddr}, storePrefix, nil)
	if err != nil {
		return nil, fmt.Errorf("open etcd store: %w", err)
	}
	defer es.Close()
	if err := authorizeAll(ctx, es, c.pns); err != nil {
		return nil, fmt.Errorf("authorize the playnodes in etcd: %w", err)
	}
	if err := pinPortaliases(ctx, es, c.pns); err != nil {
		return nil, err
	}
	for _, r := range c.relays {
		if err := r.start(ctx, s); err != nil {
			return nil, err
		}
		logf("relay %s: listen %s, portaliases on %s:%d-%d, admin %s", r.name, r.listen, r.host, s.portLow, s.portHigh, r.admin)
	}
	time.Sleep(2 * time.Second)
	for _, r := range c.relays {
		res.rssIdle = append(res.rssIdle, r.rssMiB())
	}
	if c.svc, err = startServices(); err != nil {
		return nil, err
	}
	c.fleet = &fleet{s: s}
	for _, r := range c.relays {
		c.fleet.fps = append(c.fleet.fps, r.fp)
	}
	return c, nil
}

// relaysOf is simulated playnode i's relays in order: relay i%3 first, so
// that each relay is first for a third, then the other two, in an order
// that alternates, so that a dead relay's playnodes spread over both
// survivors.
func (c *cluster) relaysOf(i int) []string {
	k := len(c.relays)
	first := i % k
	out := []string{c.relays[first].listen}
	rest := []string{c.relays[(first+1)%k].listen, c.relays[(first+2)%k].listen}
	if (i/k)%2 == 1 {
		rest[0], rest[1] = rest[1], rest[0]
	}
	return append(out, rest...)
}

func (c *cluster) simServices() []node.Service {
	return []node.Service{{Name: "echo", Addr: c.svc.echo.Addr().String()}}
}

// connectAll connects the measured playnode to relay A, then every
// simulated one, and waits until each relay's admin API shows all of them
// online; it then reads each relay's RSS.
func (c *cluster) connectAll(ctx context.Context, res *results) error {
	c.bench = &simNode{p: c.pns[len(c.pns)-1]}
	benchSvc := []node.Service{{Name: "echo", Addr: c.svc.echo.Addr().String()},
		{Name: "sink", Addr: c.svc.sink.Addr().String()}, {Name: "source", Addr: c.svc.source.Addr().String()}}
	if err := c.fleet.run(ctx, c.bench, []string{c.relays[0].listen, c.relays[1].listen, c.relays[2].listen}, benchSvc); err != nil {
		return err
	}
	c.nodes = make([]*simNode, c.s.nodes)
	for i := range c.nodes {
		c.nodes[i] = &simNode{p: c.pns[i]}
	}
	logf("connecting %d simulated playnodes (each relay first for a third)", c.s.nodes)
	t0 := time.Now()
	if err := c.fleet.startAll(ctx, c.nodes, c.relaysOf, c.simServices(), time.Minute); err != nil {
		return err
	}
	want := int64(c.s.nodes + 1)
	for c.fleet.connected.Load() < want {
		if time.Since(t0) > 3*time.Minute || ctx.Err() != nil {
			return fmt.Errorf("only %d of %d playnodes connected after %v", c.fleet.connected.Load(), want, time.Since(t0).Round(time.Second))
		}
		time.Sleep(20 * time.Millisecond)
	}
	res.connectTook = time.Since(t0)
	logf("%d playnodes connected in %v", want, res.connectTook.Round(time.Millisecond))
	for _, r := range c.relays {
		for {
			view, err := r.playnodes(ctx)
			if err == nil && len(view) == int(want) {
				break
			}
			if time.Since(t0) > 3*time.Minute || ctx.Err() != nil {
				return fmt.Errorf("relay %s shows %d of %d playnodes online (%v)", r.name, len(view), want, err)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	res.viewTook = time.Since(t0)
	logf("every relay shows all %d online after %v", want, res.viewTook.Round(time.Millisecond))
	time.Sleep(3 * time.Second)
	for _, r := range c.relays {
		res.rssNodes = append(res.rssNodes, r.rssMiB())
		n := 0
		for _, sn := range c.nodes {
			if sn.currentRelay() == r.listen {
				n++
			}
		}
		res.homes = append(res.homes, n)
	}
	return nil
}

// measureHop measures the measured playnode (at home on A) straight,
// through A, and through B and C; then stops it, so that the failover
// concerns the simulated playnodes only.
func (c *cluster) measureHop(ctx context.Context, res *results) error {
	if r := c.bench.currentRelay(); r != c.relays[0].listen {
		return fmt.Errorf("%s is at home on %q, not on relay A", benchName, r)
	}
	port := c.bench.p.port
	paths := []path{{name: colDirect, echo: c.svc.echo.Addr().String(), sink: c.svc.sink.Addr().String(), source: c.svc.source.Addr().String()}}
	for i, r := range c.relays {
		name := colHome
		if i > 0 {
			name = fmt.Sprintf(colViaFmt, r.name)
		}
		paths = append(paths, path{name: name, echo: r.portalias(port), sink: r.portalias(port + 1), source: r.portalias(port + 2)})
	}
	var pids []int
	for _, r := range c.relays {
		pids = append(pids, r.pid())
	}
	h, err := measureHop(ctx, c.s, paths, pids)
	if err != nil {
		return err
	}
	res.hop = h
	c.bench.stop()
	return nil
}

// close stops the playnodes, the relays, etcd and the services.
func (c *cluster) close() {
	if c.fleet != nil {
		for _, n := range append(c.nodes, c.bench) {
			if n != nil && n.cancel != nil {
				n.cancel()
			}
		}
		c.fleet.wg.Wait()
	}
	for _, r := range c.relays {
		r.kill()
	}
	if c.svc != nil {
		c.svc.close()
	}
	if c.etcd != nil {
		c.etcd.stop()
	}
}
