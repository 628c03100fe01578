package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// enrollFleet is one relay and a node config shared by every device, as a
// fleet image carries it: relay address, relay fingerprint, a name template
// and an enrollment token; no key.
type enrollFleet struct {
	d     *deployment
	relay *relayProc
	echo  int
}

// device is one simulated playnode: its own machine id, and the key file
// and lock its image's config points at (on a real device the same paths).
type device struct {
	dir, machineID string
}

func newEnrollFleet(t *testing.T, transport string) *enrollFleet {
	t.Helper()
	d := newDeployment(t)
	d.low, d.high = portWindow(64)
	d.ports = fmt.Sprintf("%d-%d", d.low, d.high)
	// Every simulated device dials from 127.0.0.1.
	d.serveArgs = []string{"--enroll-per-minute", "1000"}
	f := &enrollFleet{d: d, echo: startEcho(t)}
	f.relay = d.serve(t, transport, "127.0.0.1:0")
	return f
}

// token runs token create with args and returns the token, the last line.
func (f *enrollFleet) token(t *testing.T, args ...string) string {
	t.Helper()
	out := mustRun(t, relayBin, append([]string{"token", "create", "--data", f.d.data}, args...)...)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	tok := lines[len(lines)-1]
	if !strings.HasPrefix(tok, "pdt_") {
		t.Fatalf("token create printed %q, want the token alone on its last line", out)
	}
	data, _ := os.ReadFile(filepath.Join(f.d.data, "enroll_tokens"))
	// pdt_ID_SECRET; the secret is base64url and may itself hold a '_'.
	if secret := strings.SplitN(tok, "_", 3)[2]; strings.Contains(string(data), secret) {
		t.Fatal("the tokens file holds the token's secret")
	}
	return tok
}

// device makes a device with machine id id.
func (f *enrollFleet) device(t *testing.T, id string) device {
	t.Helper()
	dir := filepath.Join(f.d.dir, "dev-"+id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "machine-id"), []byte(id+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return device{dir: dir, machineID: id}
}

// run starts paradigm-node on dev with the fleet's config and token tok.
func (f *enrollFleet) run(t *testing.T, dev device, tok string) *proc {
	t.Helper()
	conf := filepath.Join(dev.dir, "node.conf")
	text := fmt.Sprintf("relay = %s\nfingerprint = %s\nname = signage-{machine-id:8}\nenroll-token = %s\nservice = echo=%d\ntransport = %s\nbackoff-max = 1s\nrefused-retry = 1s\nkey = %s\nlock = %s\nmachine-id-file = %s\n",
		f.relay.addr, f.d.fingerprint, tok, f.echo, f.relay.transport, filepath.Join(dev.dir, "node.key"), filepath.Join(dev.dir, "node.lock"), filepath.Join(dev.dir, "machine-id"))
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return start(t, "node "+dev.machineID, nodeBin, "--log-format", "json", "run", "--config", conf)
}

// refusedWith reports whether p was refused with code at least once.
func refusedWith(p *proc, code string) bool {
	for _, e := range p.matching("disconnected from relay") {
		if strings.Contains(e.str("err"), "relay refused: "+code+":") {
			return true
		}
	}
	return false
}

type nodeRow struct {
	Playnode string `json:"playnode"`
	Enrolled string `json:"enrolled"`
	Online   bool   `json:"online"`
}

func (f *enrollFleet) nodes(t *testing.T) map[string]nodeRow {
	t.Helper()
	var rows []nodeRow
	out := mustRun(t, relayBin, "nodes", "--data", f.d.data, "--json")
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("nodes --json printed %q: %v", out, err)
	}
	m := map[string]nodeRow{}
	for _, r := range rows {
		m[r.Playnode] = r
	}
	return m
}

// tokenUses is the uses left of token id, from token ls.
func (f *enrollFleet) tokenUses(t *testing.T, tok string) string {
	t.Helper()
	id := strings.Split(tok, "_")[1]
	for _, line := range strings.Split(mustRun(t, relayBin, "token", "ls", "--data", f.d.data), "\n") {
		if fields := strings.Fields(line); len(fields) > 1 && fields[0] == id {
			return fields[1]
		}
	}
	t.Fatalf("token ls does not list %s", id)
	return ""
}

func machineID(i int) string { return fmt.Sprintf("%08x%024x", 0xa0000000+i, i) }

// TestFleetEnrollment: 20 devices from one config that differs only in
// machine id; a token with --uses 10 admits exactly ten, a removed or
// expired token none, a name collision costs no use, --approve holds a
// device until approved, a revoked device is cut and stays out.
func TestFleetEnrollment(t *testing.T) {
	t.Parallel()
	f := newEnrollFleet(t, "ssh")
	ten := f.token(t, "--uses", "10", "--names", "signage-*", "--comment", "first batch")
	var devs []device
	var procs []*proc
	for i := range 20 {
		dev := f.device(t, machineID(i))
		devs = append(devs, dev)
		procs = append(procs, f.run(t, dev, ten))
	}
	waitUntil(t, "ten devices enrolled and ten refused for the token", func() bool {
		var refused int
		for _, p := range procs {
			if refusedWith(p, "token") {
				refused++
			}
		}
		return len(f.nodes(t)) == 10 && refused >= 10
	})
	if got := f.tokenUses(t, ten); got != "0" {
		t.Fatalf("token ls shows %s uses left, want 0", got)
	}
	enrolled := f.nodes(t)
	if len(enrolled) != 10 {
		t.Fatalf("nodes lists %d playnodes, want exactly 10: %v", len(enrolled), enrolled)
	}
	var late []int // the devices the token did not admit
	for i, dev := range devs {
		name := "signage-" + dev.machineID[:8]
		row, ok := enrolled[name]
		if !ok {
			late = append(late, i)
			continue
		}
		if !strings.Contains(row.Enrolled, "enrolled with token "+strings.Split(ten, "_")[1]) {
			t.Errorf("nodes shows %s enrolled %q, want the token named", name, row.Enrolled)
		}
		if _, err := os.Stat(filepath.Join(dev.dir, "node.key")); err != nil {
			t.Errorf("device %s has no key: %v", name, err)
		}
	}
	if len(late) != 10 {
		t.Fatalf("%d devices not enrolled, want 10", len(late))
	}

	// The late ten: a removed token, an expired one, then a fresh one.
	for _, i := range late {
		procs[i].stop(t, os.Interrupt)
	}
	removed := f.token(t, "--uses", "50")
	mustRun(t, relayBin, "token", "rm", "--data", f.d.data, strings.Split(removed, "_")[1])
	expired := f.token(t, "--uses", "50", "--ttl", "1ns")
	for _, tok := range []string{removed, expired} {
		var ps []*proc
		for _, i := range late[:3] {
			ps = append(ps, f.run(t, devs[i], tok))
		}
		waitUntil(t, "devices refused for a removed or expired token", func() bool {
			for _, p := range ps {
				if !refusedWith(p, "token") {
					return false
				}
			}
			return true
		})
		for _, p := range ps {
			p.stop(t, os.Interrupt)
		}
	}
	if got := len(f.nodes(t)); got != 10 {
		t.Fatalf("nodes lists %d playnodes after removed and expired tokens, want 10", got)
	}
	fresh := f.token(t, "--uses", "10")
	for _, i := range late {
		procs[i] = f.run(t, devs[i], fresh)
	}
	waitUntil(t, "all 20 devices enrolled and online", func() bool {
		n := f.nodes(t)
		if len(n) != 20 {
			return false
		}
		for _, r := range n {
			if !r.Online {
				return false
			}
		}
		return true
	})
	seen := map[uint16]string{}
	for _, row := range f.d.ls(t) {
		if other, dup := seen[row.Portalias]; dup {
			t.Fatalf("portalias %d given to %s and %s", row.Portalias, other, row.Playnode)
		}
		seen[row.Portalias] = row.Playnode
		echoThrough(t, row.Portalias)
	}
	if len(seen) != 20 {
		t.Fatalf("ls shows %d portaliases, want 20", len(seen))
	}

	// A clone whose machine id was not regenerated: same name, new key.
	spare := f.token(t, "--uses", "5")
	clone := f.device(t, devs[0].machineID)
	clone.dir = filepath.Join(f.d.dir, "clone")
	os.MkdirAll(clone.dir, 0o700)
	os.WriteFile(filepath.Join(clone.dir, "machine-id"), []byte(devs[0].machineID+"\n"), 0o644)
	cp := f.run(t, clone, spare)
	waitUntil(t, "the clone refused for its name", func() bool { return refusedWith(cp, "name-taken") })
	cp.stop(t, os.Interrupt)
	if got := f.tokenUses(t, spare); got != "5" {
		t.Fatalf("a name collision used the token: %s uses left, want 5", got)
	}

	// --approve: held until the operator approves; a rejected one stays out.
	held := f.token(t, "--uses", "2", "--approve")
	a, b := f.device(t, machineID(100)), f.device(t, machineID(101))
	pa, pb := f.run(t, a, held), f.run(t, b, held)
	waitUntil(t, "both held for approval", func() bool { return refusedWith(pa, "pending") && refusedWith(pb, "pending") })
	if out := mustRun(t, relayBin, "pending", "--data", f.d.data); !strings.Contains(out, "signage-"+a.machineID[:8]) {
		t.Fatalf("pending printed\n%s\nwant signage-%s", out, a.machineID[:8])
	}
	if _, ok := f.nodes(t)["signage-"+a.machineID[:8]]; ok {
		t.Fatal("a held device is authorized before approval")
	}
	mustRun(t, relayBin, "approve", "--data", f.d.data, "signage-"+a.machineID[:8])
	mustRun(t, relayBin, "reject", "--data", f.d.data, "signage-"+b.machineID[:8])
	waitUntil(t, "the approved device online", func() bool { return f.nodes(t)["signage-"+a.machineID[:8]].Online })
	waitUntil(t, "the rejected device told so", func() bool { return refusedWith(pb, "rejected") })

	// Revoke: cut, and its token cannot bring it back.
	victim := "signage-" + devs[1].machineID[:8]
	mustRun(t, relayBin, "revoke", "--data", f.d.data, victim)
	f.relay.waitLog(t, 1, "playnode disconnected", "playnode", victim, "reason", "revoked")
	waitUntil(t, "the revoked device refused", func() bool { return refusedWith(procs[1], "rejected") })
	if _, ok := f.nodes(t)[victim]; ok {
		t.Fatal("a revoked device is listed by nodes")
	}
}

// TestEnrollmentQUIC: the same enrollment over QUIC: a token with --uses 2
// admits two of three devices, which then serve through their portaliases.
func TestEnrollmentQUIC(t *testing.T) {
	t.Parallel()
	f := newEnrollFleet(t, "quic")
	tok := f.token(t, "--uses", "2")
	var procs []*proc
	for i := range 3 {
		procs = append(procs, f.run(t, f.device(t, machineID(200+i)), tok))
	}
	waitUntil(t, "two devices online and one refused for the token", func() bool {
		online, refused := 0, 0
		for _, r := range f.nodes(t) {
			if r.Online {
				online++
			}
		}
		for _, p := range procs {
			if refusedWith(p, "token") {
				refused++
			}
		}
		return online == 2 && refused == 1
	})
	for _, row := range f.d.ls(t) {
		echoThrough(t, row.Portalias)
	}
	if n := f.relay.count("playnode connected", "transport", "quic"); n < 2 {
		t.Fatalf("relay logged %d quic sessions, want 2", n)
	}
}

// TestHostKeyRotation: connected devices learn the relay's next host key
// over their session, so that after hostkey promote and a relay restart
// every device, pinned to the old fingerprint only, is back online.
func TestHostKeyRotation(t *testing.T) {
	t.Parallel()
	f := newEnrollFleet(t, "ssh")
	tok := f.token(t, "--uses", "3")
	var devs []device
	for i := range 3 {
		dev := f.device(t, machineID(300+i))
		devs = append(devs, dev)
		f.run(t, dev, tok)
	}
	allOnline := func() bool {
		n := f.nodes(t)
		for _, r := range n {
			if !r.Online {
				return false
			}
		}
		return len(n) == 3
	}
	waitUntil(t, "three devices online", allOnline)
	next := strings.TrimSpace(mustRun(t, relayBin, "hostkey", "next", "--data", f.d.data))
	if !strings.HasPrefix(next, "SHA256:") || next == f.d.fingerprint {
		t.Fatalf("hostkey next printed %q, want a new SHA256 fingerprint", next)
	}
	waitUntil(t, "every device to record the next host key", func() bool {
		for _, dev := range devs {
			data, err := os.ReadFile(filepath.Join(dev.dir, "node.key.known_hosts"))
			if err != nil || !strings.Contains(string(data), "ssh-ed25519 ") {
				return false
			}
		}
		return true
	})
	mustRun(t, relayBin, "hostkey", "promote", "--data", f.d.data)
	if err := f.relay.stop(t, os.Interrupt); err != nil {
		t.Fatalf("relay stop: %v", err)
	}
	f.d.fingerprint = next
	f.relay = f.d.serve(t, "ssh", f.relay.addr)
	if got := strings.TrimSpace(mustRun(t, relayBin, "fingerprint", "--data", f.d.data)); got != next {
		t.Fatalf("fingerprint after promote: got %s, want %s", got, next)
	}
	f.relay.waitLog(t, 3, "playnode connected")
	waitUntil(t, "all three devices back online with the new host key", allOnline)
}

// TestREADMEProvisioningExample follows README's "Provisioning a fleet":
// its token create line and its image's node.conf as written (the relay's
// address and fingerprint, the token and the key's path replaced by this
// test's) enroll a device.
func TestREADMEProvisioningExample(t *testing.T) {
	t.Parallel()
	f := newEnrollFleet(t, "ssh")
	create := readmeBlock(t, "**On the server**, make a token")
	line := strings.Split(create, "\n")[0]
	if !strings.HasPrefix(line, "paradigm-relay token create --data /var/lib/paradigm-relay ") {
		t.Fatalf("README's token create line %q does not start as expected", line)
	}
	line = strings.Replace(line, "paradigm-relay", relayBin, 1)
	line = strings.Replace(line, "/var/lib/paradigm-relay", f.d.data, 1)
	out := mustRun(t, "/bin/sh", "-c", line) // the README's quoting, as a shell reads it
	tok := strings.TrimSpace(out)

	conf := readmeBlock(t, "**In the image**")
	dev := f.device(t, machineID(400))
	key := filepath.Join(dev.dir, "node.key")
	for old, new := range map[string]string{
		"relay.example.com:4422":          f.relay.addr,
		"SHA256:...":                      f.d.fingerprint,
		"pdt_3f9a1c2e_...":                tok,
		"/var/lib/paradigm-node/node.key": key,
	} {
		if !strings.Contains(conf, old) {
			t.Fatalf("README's node.conf %q lacks %q", conf, old)
		}
		conf = strings.ReplaceAll(conf, old, new)
	}
	path := filepath.Join(dev.dir, "readme.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	start(t, "node", nodeBin, "run", "--config", path, "--lock", filepath.Join(dev.dir, "readme.lock"),
		"--machine-id-file", filepath.Join(dev.dir, "machine-id"))
	name := "signage-" + dev.machineID[:8]
	f.relay.waitLog(t, 1, "playnode enrolled", "playnode", name)
	f.relay.waitLog(t, 1, "playnode connected", "playnode", name)
}
