package hook

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/lvhook/lvhook/domxml"
	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/state"
)

const vm1UUID = "6f1c5b7e-2a1d-4c53-9a43-2b8f0d1e7c11"

// runXML runs one hook call on host with the XML given.
func (c *cluster) runXML(host int, xml, op, subop string) error {
	return c.hosts[host].Run(context.Background(), Call{Domain: "vm1", Op: op, SubOp: subop, Extra: "-"}, []byte(xml))
}

func (c *cluster) start(host int) {
	c.t.Helper()
	if err := c.call(host, "block-three.xml", "prepare", "begin"); err != nil {
		c.t.Fatalf("start on host %d: %v", host, err)
	}
}

// TestReleaseFallsBackToTheRecord: a stop whose XML cannot be used any more
// still deactivates what lvhook activated, from the domain's record (found
// by review: the LVs stayed ex with nothing to retry).
func TestReleaseFallsBackToTheRecord(t *testing.T) {
	for name, xml := range map[string]string{
		"malformed XML":       "<domain type='kvm'><name>vm1",
		"XML of another name": strings.Replace(string(readDomain(t, "block-three.xml")), "<name>vm1</name>", "<name>vm9</name>", 1),
		"pool file gone": "<domain type='kvm'><name>vm1</name><uuid>" + vm1UUID + "</uuid><devices>" +
			"<disk type='volume' device='disk'><source pool='gone' volume='vm1-root'/><target dev='vda'/></disk></devices></domain>",
	} {
		t.Run(name, func(t *testing.T) {
			c := newCluster(t)
			c.start(1)
			if err := c.runXML(1, xml, "release", "end"); err != nil {
				t.Errorf("release end: %v", err)
			}
			c.wantModes("after release", "vg0", held(), vm1LVs...)
			if recs, _ := c.hosts[1].State.All(state.DomainsDir); len(recs) != 0 {
				t.Errorf("records left: %+v", recs)
			}
		})
	}
}

// TestStrayStateFilesBlockNothing: a file lvhook did not write in
// state/domains/ is skipped (found by review: it blocked every start).
func TestStrayStateFilesBlockNothing(t *testing.T) {
	c := newCluster(t)
	dir := filepath.Join(c.hosts[1].State.Dir, state.DomainsDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{"junk.json": "{", "11111111-2222-4333-8444-555555555555.json": "not json", "README": "x"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c.start(1)
	c.wantModes("start beside stray files", "vg0", held(1, lvmlock.ModeEx), vm1LVs...)
	if err := c.call(1, "block-three.xml", "release", "end"); err != nil {
		t.Errorf("release end: %v", err)
	}
	c.wantModes("stop beside stray files", "vg0", held(), vm1LVs...)
}

// TestOptOutWhileRunning: manage="no" set on a running domain (virsh
// metadata --live) does not keep its LVs active after it stops.
func TestOptOutWhileRunning(t *testing.T) {
	c := newCluster(t)
	c.start(1)
	xml := strings.Replace(string(readDomain(t, "block-three.xml")), "<devices>",
		`<metadata><lvhook:domain xmlns:lvhook="https://lvhook.dev/xmlns/domain/1" manage="no"/></metadata><devices>`, 1)
	if d, err := domxml.Parse([]byte(xml), poolDir); err != nil || !d.OptedOut {
		t.Fatalf("test XML does not opt out: %v", err)
	}
	if err := c.runXML(1, xml, "release", "end"); err != nil {
		t.Errorf("release end: %v", err)
	}
	c.wantModes("after release", "vg0", held(), vm1LVs...)
}

// TestHookIgnoresEvacuationAttributes: priority and fallback are read by
// `lvhook evacuate` alone; values it refuses change nothing for the hook,
// which starts and stops the domain as without them.
func TestHookIgnoresEvacuationAttributes(t *testing.T) {
	c := newCluster(t)
	xml := strings.Replace(string(readDomain(t, "block-three.xml")), "<devices>",
		`<metadata><lvhook:domain xmlns:lvhook="https://lvhook.dev/xmlns/domain/1" priority="urgent" fallback="reboot"/></metadata><devices>`, 1)
	d, err := domxml.Parse([]byte(xml), poolDir)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if _, err := d.Evacuation(); err == nil {
		t.Fatal("test XML has evacuation attributes evacuate accepts")
	}
	for _, op := range [][2]string{{"prepare", "begin"}, {"start", "begin"}, {"started", "begin"}} {
		if err := c.runXML(1, xml, op[0], op[1]); err != nil {
			t.Fatalf("%s %s: %v", op[0], op[1], err)
		}
	}
	c.wantModes("after the start", "vg0", held(1, lvmlock.ModeEx), vm1LVs...)
	for _, op := range [][2]string{{"stopped", "end"}, {"release", "end"}} {
		if err := c.runXML(1, xml, op[0], op[1]); err != nil {
			t.Fatalf("%s %s: %v", op[0], op[1], err)
		}
	}
	c.wantModes("after the stop", "vg0", held(), vm1LVs...)
}

// TestStartRefusedWithoutItsRecord: a start whose record cannot be written
// is refused and leaves nothing active (found by review: a full state tmpfs
// started the domain with no record).
func TestStartRefusedWithoutItsRecord(t *testing.T) {
	for _, dir := range []string{state.DomainsDir, state.PendingDir} {
		t.Run(dir, func(t *testing.T) {
			c := newCluster(t)
			// A file where the directory should be: every write fails.
			if err := os.WriteFile(filepath.Join(c.hosts[1].State.Dir, dir), nil, 0o600); err != nil {
				t.Fatal(err)
			}
			err := c.call(1, "block-three.xml", "prepare", "begin")
			wantErr(t, "start", err, "refusing to start vm1: cannot record its LVs in "+c.hosts[1].State.Dir)
			c.wantModes("after the refusal", "vg0", held(), vm1LVs...)
		})
	}
}

// intentChecker fails the test when an activation runs before the LVs it
// activates are recorded as a pending deactivation: a hook killed during
// lvchange must leave something the lock helper can undo.
type intentChecker struct {
	lvmlock.Runner
	t     *testing.T
	state *state.State
	uuid  string
	seen  int
}

func (r *intentChecker) Run(ctx context.Context, name string, args ...string) ([]byte, []byte, error) {
	if name == "lvchange" && len(args) > 0 && (args[0] == "-aey" || args[0] == "-asy") {
		r.seen++
		rec, ok, err := r.state.Load(state.PendingDir, r.uuid)
		if err != nil || !ok || len(rec.LVs) == 0 {
			r.t.Errorf("%s %q ran with no intent recorded (%v, %v)", name, args, ok, err)
		}
	}
	return r.Runner.Run(ctx, name, args...)
}

func TestIntentRecordedBeforeActivation(t *testing.T) {
	c := newCluster(t)
	h := c.hosts[1]
	ic := &intentChecker{Runner: h.LVM.Runner, t: t, state: h.State, uuid: vm1UUID}
	h.LVM.Runner = ic
	c.start(1)
	if ic.seen == 0 {
		t.Fatal("no activation seen")
	}
	if _, ok, _ := h.State.Load(state.PendingDir, vm1UUID); ok {
		t.Errorf("intent left after a successful start")
	}
	// A refused start: its intent stays until release end clears it.
	if err := c.call(2, "block-three.xml", "prepare", "begin"); err == nil {
		t.Fatal("second start not refused")
	}
	if err := c.call(2, "block-three.xml", "release", "end"); err != nil {
		t.Errorf("release after the refused start: %v", err)
	}
	if _, ok, _ := c.hosts[2].State.Load(state.PendingDir, vm1UUID); ok {
		t.Errorf("intent left after release end")
	}
	c.wantModes("end", "vg0", held(1, lvmlock.ModeEx), vm1LVs...)
}

// TestReleaseWithoutTheHostLock: a release that cannot take the host lock
// before its deadline (a mass shutdown, a signal) leaves its LVs as a
// pending deactivation for the lock helper, and no record that would make
// the lock helper take them for a running domain's (found by review).
func TestReleaseWithoutTheHostLock(t *testing.T) {
	c := newCluster(t)
	c.start(1)
	h := c.hosts[1]
	unlock, err := h.State.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = h.Run(ctx, Call{Domain: "vm1", Op: "release", SubOp: "end", Extra: "-"}, readDomain(t, "block-three.xml"))
	if err == nil {
		t.Fatal("release without the host lock reported success")
	}
	rec, ok, err := h.State.Load(state.PendingDir, vm1UUID)
	if err != nil || !ok {
		t.Fatalf("no pending record: %v", err)
	}
	var got []string
	for _, l := range rec.LVs {
		got = append(got, l.LV)
	}
	if strings.Join(got, " ") != strings.Join(vm1LVs, " ") {
		t.Errorf("pending LVs = %v, want %v", got, vm1LVs)
	}
	if _, ok, _ := h.State.Load(state.DomainsDir, vm1UUID); ok {
		t.Errorf("domain record left: the lock helper would take the LVs as in use")
	}
}

// TestReleaseLogsLibvirtsReason: libvirt >= 10.5 passes why the domain
// stopped as release end's last argument (seen on Debian 13: "migrated" on
// the source of a live migration); the hook's record carries it, and a "-"
// (libvirt 9.0) adds nothing.
func TestReleaseLogsLibvirtsReason(t *testing.T) {
	for extra, want := range map[string]string{"migrated": `"reason":"migrated"`, "crashed": `"reason":"crashed"`, "-": ""} {
		t.Run(extra, func(t *testing.T) {
			c := newCluster(t)
			c.start(1)
			var buf strings.Builder
			h := c.hosts[1]
			h.Log = zerolog.New(&buf)
			call := Call{Domain: "vm1", Op: "release", SubOp: "end", Extra: extra}
			if err := h.Run(context.Background(), call, readDomain(t, "block-three.xml")); err != nil {
				t.Fatalf("release end: %v", err)
			}
			done := ""
			for _, line := range strings.Split(buf.String(), "\n") {
				if strings.Contains(line, `"message":"hook done"`) {
					done = line
				}
			}
			if done == "" {
				t.Fatalf("no hook done record in:\n%s", buf.String())
			}
			if want == "" && strings.Contains(done, `"reason"`) {
				t.Errorf("release end with %q logged a reason: %s", extra, done)
			}
			if want != "" && !strings.Contains(done, want) {
				t.Errorf("release end with %q: record %s lacks %s", extra, done, want)
			}
		})
	}
}
