package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"paradigm/internal/identity"
)

func cands(addrs ...string) []candidate {
	var out []candidate
	for i, a := range addrs {
		out = append(out, candidate{entry: i, name: a, addr: a})
	}
	return out
}

// within fails t unless d is one backoff step of nominal length nominal:
// in [nominal/2, nominal].
func within(t *testing.T, what string, d, nominal time.Duration) {
	t.Helper()
	if d < nominal/2 || d > nominal {
		t.Fatalf("%s: got a wait of %v, want within [%v, %v]", what, d, nominal/2, nominal)
	}
}

// TestRotationOrder: failures move to the next relay at once; a round of
// failures ends with one backoff step, growing per round, and the next
// round starts at the first relay; an ended session waits one step and
// goes on with the next relay.
func TestRotationOrder(t *testing.T) {
	c := cands("a:1", "b:1", "c:1")
	r := newRotation(4*time.Second, time.Minute)
	fail := attemptResult{}
	var order []string
	for round, nominal := range []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second} {
		for k := range c {
			i := r.pick(c)
			order = append(order, c[i].name)
			wait, over := r.done(c, i, fail)
			if k < len(c)-1 {
				if wait != 0 || over {
					t.Fatalf("round %d, attempt %d: got wait %v, round over %v; want the next relay at once", round, k, wait, over)
				}
				continue
			}
			if !over {
				t.Fatalf("round %d: not over after %d failures", round, len(c))
			}
			within(t, fmt.Sprintf("round %d", round), wait, nominal)
		}
	}
	if want := slices.Repeat([]string{"a:1", "b:1", "c:1"}, 5); !slices.Equal(order, want) {
		t.Fatalf("got order %v, want %v", order, want)
	}

	// Connected to b (after a failed a), b's session ends after a while:
	// one short step, then c; c fails, a fails, b fails: round over.
	r = newRotation(4*time.Second, time.Minute)
	r.done(c, r.pick(c), fail) // a
	i := r.pick(c)
	if c[i].name != "b:1" {
		t.Fatalf("after a failed: got %s, want b:1", c[i].name)
	}
	wait, over := r.done(c, i, attemptResult{welcomed: true, stable: true})
	within(t, "after a stable session", wait, 500*time.Millisecond)
	if over {
		t.Fatal("an ended session ends no round")
	}
	for k, want := range []string{"c:1", "a:1", "b:1"} {
		i := r.pick(c)
		if c[i].name != want {
			t.Fatalf("after b's session, attempt %d: got %s, want %s", k, c[i].name, want)
		}
		wait, over = r.done(c, i, fail)
	}
	if !over {
		t.Fatal("round not over after every relay failed once since the session")
	}
	within(t, "first round after the session", wait, time.Second)
	if i := r.pick(c); c[i].name != "a:1" {
		t.Fatalf("new round: got %s, want a:1", c[i].name)
	}
}

// TestRotationOneRelay: with a single relay every failure ends a round, so
// the waits are those of a node of one relay: they double each attempt.
func TestRotationOneRelay(t *testing.T) {
	c := cands("a:1")
	r := newRotation(4*time.Second, time.Minute)
	for k, nominal := range []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second} {
		i := r.pick(c)
		wait, over := r.done(c, i, attemptResult{})
		if i != 0 || !over {
			t.Fatalf("attempt %d: got index %d, round over %v", k, i, over)
		}
		within(t, fmt.Sprint("attempt ", k), wait, nominal)
	}
	// A session that ended at once keeps the backoff growing.
	wait, _ := r.done(c, r.pick(c), attemptResult{welcomed: true})
	within(t, "short session", wait, 4*time.Second)
	wait, _ = r.done(c, r.pick(c), attemptResult{welcomed: true, stable: true})
	within(t, "stable session", wait, 500*time.Millisecond)
}

// TestRotationRefusals: the slow pacing holds only when every relay of a
// round refused for a reason only its operator can lift.
func TestRotationRefusals(t *testing.T) {
	c := cands("a:1", "b:1")
	r := newRotation(time.Second, time.Minute)
	slow := attemptResult{slow: true}
	var wait time.Duration
	for round, nominal := range []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second} {
		for range c {
			wait, _ = r.done(c, r.pick(c), slow)
		}
		within(t, fmt.Sprint("all refused, round ", round), wait, nominal)
	}
	// a refuses, b is down: the ordinary backoff, capped at one second.
	r.done(c, r.pick(c), slow)
	wait, over := r.done(c, r.pick(c), attemptResult{})
	if !over {
		t.Fatal("round not over")
	}
	within(t, "one refused, one down", wait, 500*time.Millisecond)
	// The refused pacing starts afresh.
	for range c {
		wait, _ = r.done(c, r.pick(c), slow)
	}
	within(t, "all refused again", wait, 500*time.Millisecond)
}

// TestRotationMoveBack: a session ended for a preferred relay goes to it
// at once; a relay whose address left DNS is followed by the next relay.
func TestRotationMoveBack(t *testing.T) {
	c := cands("a:1", "b:1", "c:1")
	r := newRotation(time.Second, time.Minute)
	r.done(c, r.pick(c), attemptResult{})
	r.done(c, r.pick(c), attemptResult{})
	i := r.pick(c)
	if c[i].name != "c:1" {
		t.Fatalf("got %s, want c:1", c[i].name)
	}
	wait, over := r.done(c, i, attemptResult{welcomed: true, moveTo: &c[0]})
	if wait != 0 || over {
		t.Fatalf("move back: got wait %v, round over %v; want at once", wait, over)
	}
	if i := r.pick(c); i != 0 {
		t.Fatalf("move back: got %s, want a:1", c[i].name)
	}

	// b resolves to two addresses; the one tried last disappears.
	dns := []candidate{{0, "a:1", "a:1", nil}, {1, "b:1", "10.0.0.1:1", nil}, {1, "b:1", "10.0.0.2:1", nil}, {2, "c:1", "c:1", nil}}
	r = newRotation(time.Second, time.Minute)
	r.done(dns, 1, attemptResult{})
	if i := r.pick(dns); i != 2 {
		t.Fatalf("after b's first address: got %v, want its second", dns[i])
	}
	r.done(dns, 2, attemptResult{})
	if i := r.pick(slices.Delete(slices.Clone(dns), 2, 3)); i != 2 {
		t.Fatalf("b's second address gone: got index %d, want c (2)", i)
	}
}

// TestRotationFreshAddresses: a name that resolves to new addresses at
// every attempt still ends a round after as many failures as candidates.
func TestRotationFreshAddresses(t *testing.T) {
	r := newRotation(time.Second, time.Minute)
	for k := range 3 {
		c := []candidate{{0, "rr:1", fmt.Sprintf("10.0.0.%d:1", 2*k), nil}, {0, "rr:1", fmt.Sprintf("10.0.0.%d:1", 2*k+1), nil}}
		wait, over := r.done(c, r.pick(c), attemptResult{})
		if over != (k == 1) || (wait == 0) == over {
			t.Fatalf("failure %d: got wait %v, round over %v; want the round over after the second", k, wait, over)
		}
	}
}

// TestResolve: a name with several addresses gives a candidate per
// address (at most MaxRelayAddrs, no repeats), checked under its name; a
// name that does not resolve gives one candidate that fails.
func TestResolve(t *testing.T) {
	many := []string{"10.0.0.1", "10.0.0.1", "::1"}
	for i := range 2 * MaxRelayAddrs {
		many = append(many, fmt.Sprintf("10.1.0.%d", i))
	}
	lookup := func(_ context.Context, host string) ([]string, error) {
		switch host {
		case "relays.example":
			return many, nil
		case "two.example":
			return []string{"192.0.2.1", "192.0.2.2"}, nil
		}
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	n := &Node{cfg: Config{Relays: []string{"two.example:4422", "192.0.2.9:4422", "relays.example:4422", "gone.example:4422"},
		LookupHost: lookup, HandshakeTimeout: time.Second}}
	got := n.candidates(context.Background())
	var addrs []string
	for _, c := range got {
		addrs = append(addrs, c.addr)
	}
	want := []string{"192.0.2.1:4422", "192.0.2.2:4422", "192.0.2.9:4422", "10.0.0.1:4422", "[::1]:4422"}
	for i := range MaxRelayAddrs - 2 {
		want = append(want, fmt.Sprintf("10.1.0.%d:4422", i))
	}
	want = append(want, "gone.example:4422")
	if !slices.Equal(addrs, want) {
		t.Fatalf("got addresses %v\nwant %v", addrs, want)
	}
	if got[0].name != "two.example:4422" || got[1].name != "two.example:4422" || got[1].entry != 0 {
		t.Fatalf("got %+v %+v, want both named two.example:4422, entry 0", got[0], got[1])
	}
	last := got[len(got)-1]
	var dnsErr *net.DNSError
	if !errors.As(last.err, &dnsErr) || last.entry != 3 {
		t.Fatalf("unresolvable relay: got %+v, want entry 3 carrying the DNS error", last)
	}
}

// TestPreferFirstPacing: probes run once per interval, in order, and the
// first relay that answers is chosen; none run once the session ends.
func TestPreferFirstPacing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := cands("a:1", "b:1")
		start := time.Now()
		var probes []string
		var at []time.Duration
		probe := func(_ context.Context, c candidate) error {
			probes = append(probes, c.name)
			at = append(at, time.Since(start))
			if len(probes) >= 5 && c.name == "b:1" {
				return nil
			}
			return errors.New("down")
		}
		got, ok := preferFirst(context.Background(), time.Minute, func() []candidate { return c }, probe)
		if !ok || got.name != "b:1" {
			t.Fatalf("got %v %v, want b:1", got, ok)
		}
		want := []string{"a:1", "b:1", "a:1", "b:1", "a:1", "b:1"}
		wantAt := []time.Duration{time.Minute, time.Minute, 2 * time.Minute, 2 * time.Minute, 3 * time.Minute, 3 * time.Minute}
		if !slices.Equal(probes, want) || !slices.Equal(at, wantAt) {
			t.Fatalf("got probes %v at %v, want %v at %v", probes, at, want, wantAt)
		}

		ctx, cancel := context.WithCancel(context.Background())
		probes = nil
		done := make(chan bool)
		go func() {
			_, ok := preferFirst(ctx, time.Minute, func() []candidate { return c }, func(context.Context, candidate) error {
				probes = append(probes, "x")
				return errors.New("down")
			})
			done <- ok
		}()
		time.Sleep(90 * time.Second)
		cancel()
		if <-done {
			t.Fatal("a cancelled prober chose a relay")
		}
		time.Sleep(10 * time.Minute)
		if len(probes) != 2 {
			t.Fatalf("got %d probes in 90 s of session then none after, want 2 (one round)", len(probes))
		}
	})
}

// closedPort returns a loopback address where nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestRunOrder: Run against relays that are all down tries them in order,
// a name with two addresses as two relays resolved again at every attempt,
// waits only between rounds, and starts each round at the first relay.
func TestRunOrder(t *testing.T) {
	a, b := closedPort(t), closedPort(t)
	_, bPort, _ := net.SplitHostPort(b)
	keyFile := newKey(t, "dev1")
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		answer := []string{"127.0.0.1", "127.0.0.2"}
		type try struct {
			addr string
			at   time.Duration
		}
		var tries []try
		lookups := 0
		start := time.Now()
		n, err := New(Config{Relays: []string{a, "relays.test:" + bPort}, Fingerprint: identity.Fingerprint(hostKey(t).PublicKey()),
			KeyFile: keyFile, Name: "dev1", Services: []Service{{"ssh", "127.0.0.1:22"}}, BackoffMax: 4 * time.Second,
			LookupHost: func(_ context.Context, host string) ([]string, error) {
				mu.Lock()
				defer mu.Unlock()
				lookups++
				return answer, nil
			},
			Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		n.attempted = func(c candidate) {
			mu.Lock()
			defer mu.Unlock()
			tries = append(tries, try{c.addr, time.Since(start)})
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- n.Run(ctx) }()
		time.Sleep(2 * time.Second) // rounds at 0, [0.25,0.5], [0.75,1.5]
		synctest.Wait()
		mu.Lock()
		answer = []string{"127.0.0.3"}
		mu.Unlock()
		time.Sleep(4 * time.Second)
		synctest.Wait()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		b1, b2, b3 := "127.0.0.1:"+bPort, "127.0.0.2:"+bPort, "127.0.0.3:"+bPort
		if len(tries) < 3*3+2 {
			t.Fatalf("got %d attempts, want at least 11: %v", len(tries), tries)
		}
		for k := 0; k < 9; k += 3 {
			round := tries[k : k+3]
			if round[0].addr != a || round[1].addr != b1 || round[2].addr != b2 || round[1].at != round[0].at || round[2].at != round[0].at {
				t.Fatalf("round %d: got %v, want %s, %s, %s at one instant", k/3, round, a, b1, b2)
			}
		}
		if tries[3].at < 250*time.Millisecond || tries[3].at > 500*time.Millisecond {
			t.Fatalf("second round at %v, want within [250ms, 500ms]", tries[3].at)
		}
		var after []string
		for _, tr := range tries {
			if tr.at > 2*time.Second {
				after = append(after, tr.addr)
			}
		}
		if len(after) < 2 || after[0] != a || after[1] != b3 {
			t.Fatalf("after the DNS change: got %v, want %s then %s", after, a, b3)
		}
		if lookups < len(tries) {
			t.Fatalf("%d lookups for %d attempts, want one at least per attempt", lookups, len(tries))
		}
	})
}
