package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"paradigm/bench/benchkit"
	"paradigm/internal/node"
)

// failoverFigures is what the kill of one relay cost its playnodes.
type failoverFigures struct {
	killed    string // the killed relay's name
	victims   int    // its playnodes at the kill
	survivors int
	nodeBack  []time.Duration
	adminAll  map[string]time.Duration   // survivor -> its admin API shows every victim online elsewhere
	adminGone map[string]time.Duration   // survivor -> its admin API shows none at home on the failed relay
	echoBack  map[string][]time.Duration // survivor -> per victim: its portalias answered through it
	// From a victim's connect to its first answer through the relay it
	// connected to (local) and through the other survivor (presence
	// through etcd, then one mesh hop).
	lagLocal, lagRemote []time.Duration
	landed              map[string]int // where the victims' sessions are now, by relay name
	missing             []string       // what did not come back within the limit
	otherOK             int            // non-victim playnodes sampled after the failover that answered through every survivor
	otherSeen           int
	// CPU seconds used from the signal until every probe answered (or the
	// wait ended): the surviving relays together, and this process (the
	// simulated playnodes and the probes), over wall seconds.
	cpuSurvivors, cpuSelf, cpuWall float64
}

// allBack is the time until the last victim answered through every
// surviving relay; ok is false when one never did.
func (f *failoverFigures) allBack() (time.Duration, bool) {
	if len(f.echoBack) < f.survivors {
		return 0, false
	}
	var worst time.Duration
	for _, ds := range f.echoBack {
		if len(ds) < f.victims {
			return 0, false
		}
		worst = max(worst, ds[len(ds)-1])
	}
	return worst, true
}

// measureFailover kills relays[victim] with SIGKILL (or, with -fail stop,
// freezes it with SIGSTOP: a hung relay whose connections stay open) and
// times, from just before the signal, until every playnode that was at
// home there is connected elsewhere (as the nodes see it), shown online
// elsewhere by each surviving relay's admin API, and answering a 64-byte
// echo through its portalias on each surviving relay. The playnodes fail
// over by themselves (node.Config.Relays); with -failover bench the
// benchmark restarts each against the survivors as soon as its session
// ended (an ideal, instant move, for comparison).
func measureFailover(ctx context.Context, s *settings, f *fleet, relays []*relayProc, victim int, nodes []*simNode, svc []node.Service) (*failoverFigures, error) {
	killed := relays[victim]
	var survivors []*relayProc
	for i, r := range relays {
		if i != victim {
			survivors = append(survivors, r)
		}
	}
	var vic []*simNode
	for _, n := range nodes {
		if n.currentRelay() == killed.listen {
			vic = append(vic, n)
		}
	}
	if len(vic) == 0 {
		return nil, fmt.Errorf("no playnode at home on relay %s", killed.name)
	}
	ff := &failoverFigures{killed: killed.name, victims: len(vic), survivors: len(survivors),
		adminAll: map[string]time.Duration{}, adminGone: map[string]time.Duration{},
		echoBack: map[string][]time.Duration{}, landed: map[string]int{}}
	ctx, cancel := context.WithTimeout(ctx, s.failoverWait)
	defer cancel()
	cpu0, self0 := relaysCPU(survivors), cpuSeconds(os.Getpid())
	t0 := time.Now()
	failRelay(s, killed, len(vic), t0)
	ff.observe(ctx, s, f, vic, killed.listen, survivors, svc, t0)
	ff.cpuWall = time.Since(t0).Seconds()
	ff.cpuSurvivors = relaysCPU(survivors) - cpu0
	ff.cpuSelf = cpuSeconds(os.Getpid()) - self0
	for _, n := range vic {
		name := "none"
		for _, r := range relays {
			if n.currentRelay() == r.listen {
				name = r.name
			}
		}
		ff.landed[name]++
	}
	ff.noteMissing(survivors, len(vic))
	ff.otherOK, ff.otherSeen = sampleOthers(nodes, vic, survivors)
	return ff, nil
}

// failRelay kills or freezes r (-fail).
func failRelay(s *settings, r *relayProc, playnodes int, t0 time.Time) {
	if s.fail == failStop {
		logf("failover: SIGSTOP relay %s (%d playnodes at home there): it hangs, its connections stay open", r.name, playnodes)
		r.freeze()
		return
	}
	logf("failover: kill -9 relay %s (%d playnodes at home there)", r.name, playnodes)
	r.kill()
	logf("failover: relay %s gone after %v", r.name, time.Since(t0).Round(time.Millisecond))
}

// observe runs the watchers (and, with -failover bench, the move) until
// each is done or ctx ends.
func (ff *failoverFigures) observe(ctx context.Context, s *settings, f *fleet, vic []*simNode, killed string, survivors []*relayProc, svc []node.Service, t0 time.Time) {
	var wg sync.WaitGroup
	if s.failover == failoverBench {
		wg.Go(func() { moveNodes(ctx, f, vic, survivors, svc) })
	}
	var mu sync.Mutex // guards ff's fields until wg.Wait returns
	wg.Go(func() {
		back := watchNodes(ctx, vic, killed, t0)
		mu.Lock()
		ff.nodeBack = back
		mu.Unlock()
	})
	for _, r := range survivors {
		wg.Go(func() {
			gone, all, ok := watchAdmin(ctx, r, vic, killed, t0)
			mu.Lock()
			if gone != 0 {
				ff.adminGone[r.name] = gone
			}
			if ok {
				ff.adminAll[r.name] = all
			}
			mu.Unlock()
		})
	}
	wg.Go(func() {
		back, local, remote := echoUntilBack(ctx, vic, survivors, killed, t0)
		mu.Lock()
		ff.echoBack, ff.lagLocal, ff.lagRemote = back, local, remote
		mu.Unlock()
	})
	wg.Wait()
}

// relaysCPU is the CPU seconds rs used so far, together.
func relaysCPU(rs []*relayProc) float64 {
	var sum float64
	for _, r := range rs {
		sum += cpuSeconds(r.pid())
	}
	return sum
}

// moveNodes restarts every victim against the survivors (alternating
// which is first) as soon as it saw its session end: -failover bench, an
// ideal move without the node's backoff step.
func moveNodes(ctx context.Context, f *fleet, vic []*simNode, survivors []*relayProc, svc []node.Service) {
	var wg sync.WaitGroup
	for i, n := range vic {
		wg.Go(func() {
			for n.up.Load() && ctx.Err() == nil {
				sleepCtx(ctx, 5*time.Millisecond)
			}
			n.stop()
			order := []string{survivors[i%2].listen, survivors[(i+1)%2].listen}
			if err := f.run(ctx, n, order, svc); err != nil {
				logf("failover: restart %s: %v", n.p.name, err)
			}
		})
	}
	wg.Wait()
}

// watchNodes polls the victims' own view every 20 ms until each is
// connected to another relay, and returns the times, sorted.
func watchNodes(ctx context.Context, vic []*simNode, killed string, t0 time.Time) []time.Duration {
	back := make([]time.Duration, len(vic))
	left := len(vic)
	for left > 0 && ctx.Err() == nil {
		for i, n := range vic {
			if back[i] != 0 {
				continue
			}
			if r := n.currentRelay(); r != "" && r != killed {
				if at := time.Unix(0, n.upAt.Load()); at.After(t0) {
					back[i] = at.Sub(t0)
					left--
				}
			}
		}
		sleepCtx(ctx, 20*time.Millisecond)
	}
	return sortedNonZero(back)
}

// watchAdmin polls r's /api/v1/playnodes every 250 ms until it shows every
// victim online on a relay other than the killed one (all). gone is when
// it first showed none of them at home on the killed relay (moved, or
// offline once the killed relay's lease ended).
func watchAdmin(ctx context.Context, r *relayProc, vic []*simNode, killed string, t0 time.Time) (gone, all time.Duration, ok bool) {
	for ctx.Err() == nil {
		view, err := r.playnodes(ctx)
		at := time.Since(t0)
		if err == nil {
			elsewhere, onKilled := 0, 0
			for _, n := range vic {
				switch home, online := view[n.p.name]; {
				case online && home == killed:
					onKilled++
				case online:
					elsewhere++
				}
			}
			if onKilled == 0 && gone == 0 {
				gone = at
			}
			if elsewhere == len(vic) {
				return gone, at, true
			}
		}
		sleepCtx(ctx, 250*time.Millisecond)
	}
	return gone, 0, false
}

// echoWorkers bounds the echo probes in flight during a failover. During
// the burst of reconnections a probe can take hundreds of milliseconds on
// this 2-CPU machine; with too few workers the probes would queue in this
// program and their wait would count as the relays'.
const echoWorkers = 256

// echoUntilBack probes every victim's portalias on every survivor with
// one 64-byte echo until it answers, and returns per survivor the times
// of the first answers, sorted, and the lags from each victim's connect
// to its first answer through the relay it is on and through the other
// (see failoverFigures), sorted. A victim is probed once it is connected
// to another relay (before, nothing can answer, and probing would only
// load the machine during the failover it measures), then every 20 ms
// until it answers; a dispatcher hands due probes to the workers every
// 5 ms.
func echoUntilBack(ctx context.Context, vic []*simNode, survivors []*relayProc, killed string, t0 time.Time) (back map[string][]time.Duration, local, remote []time.Duration) {
	var jobs []*probeJob
	for _, r := range survivors {
		for _, n := range vic {
			jobs = append(jobs, &probeJob{n: n, r: r})
		}
	}
	work := make(chan int, len(jobs))
	results := make(chan probeResult, len(jobs))
	var wg sync.WaitGroup
	for range echoWorkers {
		wg.Go(func() {
			for i := range work {
				err := echoOnce(jobs[i].r.portalias(jobs[i].n.p.port))
				results <- probeResult{i, err == nil, time.Since(t0)}
			}
		})
	}
	back = map[string][]time.Duration{}
	for left := len(jobs); left > 0 && ctx.Err() == nil; {
		now := time.Now()
		for i, j := range jobs {
			if j.done || j.busy || now.Before(j.next) {
				continue
			}
			if r := j.n.currentRelay(); r == "" || r == killed {
				continue
			}
			j.busy = true
			work <- i
		}
		sleepCtx(ctx, 5*time.Millisecond)
		for _, res := range drain(results) {
			j := jobs[res.i]
			j.busy = false
			if !res.ok {
				j.next = time.Now().Add(20 * time.Millisecond)
				continue
			}
			j.done = true
			left--
			back[j.r.name] = append(back[j.r.name], res.at)
			lag := res.at - time.Unix(0, j.n.upAt.Load()).Sub(t0)
			if j.n.currentRelay() == j.r.listen {
				local = append(local, lag)
			} else {
				remote = append(remote, lag)
			}
		}
	}
	close(work)
	wg.Wait()
	for _, ds := range back {
		sortDurations(ds)
	}
	sortDurations(local)
	sortDurations(remote)
	return back, local, remote
}

// probeJob is one victim's portalias on one survivor, owned by
// echoUntilBack's dispatcher.
type probeJob struct {
	n          *simNode
	r          *relayProc
	next       time.Time // not before
	busy, done bool
}

type probeResult struct {
	i  int // index of the job
	ok bool
	at time.Duration // since the signal
}

// drain takes what c holds now without waiting.
func drain(c <-chan probeResult) []probeResult {
	var out []probeResult
	for {
		select {
		case r := <-c:
			out = append(out, r)
		default:
			return out
		}
	}
}

// echoOnce dials addr and makes one 64-byte round trip.
func echoOnce(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	msg := make([]byte, benchkit.MsgSize)
	copy(msg, addr)
	return benchkit.RoundTrip(c, msg, make([]byte, benchkit.MsgSize))
}

// sampleOthers checks that up to 20 playnodes that were not on the
// killed relay still answer through every survivor.
func sampleOthers(nodes, vic []*simNode, survivors []*relayProc) (ok, seen int) {
	isVictim := map[*simNode]bool{}
	for _, n := range vic {
		isVictim[n] = true
	}
	step := max(len(nodes)/20, 1)
	for i := 0; i < len(nodes); i += step {
		if isVictim[nodes[i]] {
			continue
		}
		seen++
		good := true
		for _, r := range survivors {
			if echoOnce(r.portalias(nodes[i].p.port)) != nil {
				good = false
			}
		}
		if good {
			ok++
		}
	}
	return ok, seen
}

func (ff *failoverFigures) noteMissing(survivors []*relayProc, victims int) {
	if len(ff.nodeBack) < victims {
		ff.missing = append(ff.missing, fmt.Sprintf("%d of %d playnodes not reconnected elsewhere (node view)", victims-len(ff.nodeBack), victims))
	}
	for _, r := range survivors {
		if _, ok := ff.adminAll[r.name]; !ok {
			ff.missing = append(ff.missing, fmt.Sprintf("relay %s's admin API never showed all %d online elsewhere", r.name, victims))
		}
		if n := len(ff.echoBack[r.name]); n < victims {
			ff.missing = append(ff.missing, fmt.Sprintf("%d of %d portaliases never answered through relay %s", victims-n, victims, r.name))
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
