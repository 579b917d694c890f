package migration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"

	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/lvmlock/lvmfake"
	"github.com/lvhook/lvhook/peer"
	"github.com/lvhook/lvhook/state"
	"github.com/lvhook/lvhook/virt"
)

type lock = map[int]lvmlock.Mode

func problemsOf(t *testing.T, h *testHost) map[string][]string {
	t.Helper()
	dps, err := h.state.Problems()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, dp := range dps {
		for _, p := range dp.Problems {
			out[dp.Name] = append(out[dp.Name], p.VG+"/"+p.LV+": "+p.What)
		}
	}
	return out
}

// TestExclusiveAfterMigration: the destination, on RESUMED_MIGRATED, retries
// sh -> ex until the source's release has dropped its sh, then clears the
// record's Incoming flag.
func TestExclusiveAfterMigration(t *testing.T) {
	c := newTestCluster(t, 2)
	dst := c.hosts[1]
	dst.lv.run("vm1", uuid1, virt.StateRunning, virt.JobNone, "/dev/vg0/a", "/dev/vg0/b")
	c.record(2, "vm1", uuid1, true, "a", "b")
	for _, lv := range []string{"a", "b"} {
		c.hold(1, lv, lvmlock.ModeSh)
		c.hold(2, lv, lvmlock.ModeSh)
	}
	ctx := context.Background()
	dst.helper.HandleEvent(ctx, virt.Event{Domain: virt.Domain{Name: "vm1", UUID: uuid1}, Kind: virt.EventResumedMigrated})
	if diff := cmp.Diff(map[string]map[int]lvmlock.Mode{"a": {1: "sh", 2: "sh"}, "b": {1: "sh", 2: "sh"}}, c.holders("a", "b")); diff != "" {
		t.Fatalf("while the source holds sh (-want +got):\n%s", diff)
	}
	if got, want := dst.helper.NextWake(), c.clock().Add(retryMin); !got.Equal(want) {
		t.Errorf("NextWake() = %v, want the first retry at %v", got, want)
	}
	// The source's release end: -an there.
	c.hold(1, "a", lvmlock.ModeNone)
	c.hold(1, "b", lvmlock.ModeNone)
	c.advance(retryMin)
	dst.helper.Tick(ctx)
	if diff := cmp.Diff(map[string]map[int]lvmlock.Mode{"a": {2: "ex"}, "b": {2: "ex"}}, c.holders("a", "b")); diff != "" {
		t.Errorf("after the source's release (-want +got):\n%s", diff)
	}
	rec, _, err := dst.state.Load(state.DomainsDir, uuid1)
	if err != nil || rec.Incoming {
		t.Errorf("record after ex: %+v, %v; want Incoming cleared", rec, err)
	}
	if got := problemsOf(t, dst); len(got) != 0 {
		t.Errorf("problems left: %v", got)
	}
}

// TestReconcileModes: what a pass does to a domain running here, by job.
func TestReconcileModes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		state    virt.DomainState
		job      virt.JobKind
		recorded bool
		before   map[int]lvmlock.Mode // lock table of vg0/a
		after    map[int]lvmlock.Mode
		problem  string
	}{
		{name: "cancelled migration, source alone: back to ex", state: virt.StateRunning, job: virt.JobNone, recorded: true,
			before: lock{1: "sh"}, after: lock{1: "ex"}},
		{name: "cancelled migration, destination not yet released: kept", state: virt.StateRunning, job: virt.JobNone, recorded: true,
			before: lock{1: "sh", 2: "sh"}, after: lock{1: "sh", 2: "sh"}},
		{name: "outgoing migration: sh kept", state: virt.StateRunning, job: virt.JobMigrationOut, recorded: true,
			before: lock{1: "sh"}, after: lock{1: "sh"}},
		{name: "incoming migration: sh kept", state: virt.StatePaused, job: virt.JobMigrationIn, recorded: true,
			before: lock{1: "sh"}, after: lock{1: "sh"}},
		{name: "save or dump job: ex due", state: virt.StatePaused, job: virt.JobOther, recorded: true,
			before: lock{1: "sh"}, after: lock{1: "ex"}},
		{name: "crashed, QEMU kept: active, ex due as when paused", state: virt.StateCrashed, job: virt.JobNone, recorded: true,
			before: lock{1: "sh"}, after: lock{1: "ex"}},
		{name: "crashed, ex: kept", state: virt.StateCrashed, job: virt.JobNone, recorded: true,
			before: lock{1: "ex"}, after: lock{1: "ex"}},
		{name: "ex where ex is due: nothing", state: virt.StateRunning, job: virt.JobNone, recorded: true,
			before: lock{1: "ex"}, after: lock{1: "ex"}},
		{name: "inactive LV of a running domain: never activated, reported", state: virt.StateRunning, job: virt.JobNone, recorded: true,
			before: lock{}, after: lock{}, problem: "not active here"},
		{name: "domain lvhook did not start: not repaired, reported", state: virt.StateRunning, job: virt.JobNone,
			before: lock{1: "sh"}, after: lock{1: "sh"}, problem: "no record"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCluster(t, 2)
			h := c.hosts[0]
			h.lv.run("vm1", uuid1, tc.state, tc.job, "/dev/vg0/a")
			if tc.recorded {
				c.record(1, "vm1", uuid1, false, "a")
			}
			for host, m := range tc.before {
				c.hold(host, "a", m)
			}
			h.helper.ReconcileAll(context.Background())
			if diff := cmp.Diff(tc.after, c.lvm.Holders("vg0", "a")); diff != "" {
				t.Errorf("vg0/a after a pass (-want +got):\n%s", diff)
			}
			got := strings.Join(problemsOf(t, h)["vm1"], "\n")
			if tc.problem == "" && got != "" || !strings.Contains(got, tc.problem) {
				t.Errorf("problems = %q, want one containing %q", got, tc.problem)
			}
		})
	}
}

// TestReconcileCrashed: a crashed domain whose QEMU libvirt kept is active
// here: pass after pass, its LVs stay held and nothing is reported (not a
// domain "recorded as running here but libvirt does not list it").
func TestReconcileCrashed(t *testing.T) {
	c := newTestCluster(t, 2)
	h := c.hosts[0]
	h.lv.run("vm1", uuid1, virt.StateCrashed, virt.JobNone, "/dev/vg0/a")
	c.record(1, "vm1", uuid1, false, "a")
	c.hold(1, "a", lvmlock.ModeEx)
	for range 3 {
		c.advance(h.helper.Config.Daemon.ReconcileInterval.D())
		h.helper.Tick(context.Background())
	}
	if diff := cmp.Diff(lock{1: "ex"}, c.lvm.Holders("vg0", "a")); diff != "" {
		t.Errorf("vg0/a after three passes (-want +got):\n%s", diff)
	}
	if got := problemsOf(t, h); len(got) != 0 {
		t.Errorf("problems = %v, want none", got)
	}
	if _, ok, err := h.state.Load(state.DomainsDir, uuid1); !ok || err != nil {
		t.Errorf("record of the crashed domain: %v, %v; want kept", ok, err)
	}
}

// TestStuckSharedReported: past exclusive_timeout an LV still sh is logged
// and left in the problems file for lvhook check, which is cleared once ex.
func TestStuckSharedReported(t *testing.T) {
	c := newTestCluster(t, 2)
	dst := c.hosts[1]
	dst.lv.run("vm1", uuid1, virt.StateRunning, virt.JobNone, "/dev/vg0/a")
	c.record(2, "vm1", uuid1, true, "a")
	c.hold(1, "a", lvmlock.ModeSh)
	c.hold(2, "a", lvmlock.ModeSh)
	ctx := context.Background()
	dst.helper.HandleEvent(ctx, virt.Event{Domain: virt.Domain{Name: "vm1", UUID: uuid1}, Kind: virt.EventResumedMigrated})
	timeout := dst.helper.Config.Daemon.ExclusiveTimeout.D()
	for end := c.clock().Add(timeout); c.clock().Before(end); {
		c.advance(dst.helper.NextWake().Sub(c.clock()))
		dst.helper.Tick(ctx)
	}
	got := problemsOf(t, dst)["vm1"]
	if len(got) != 1 || !strings.Contains(got[0], "vg0/a: still shared since") {
		t.Fatalf("problems past exclusive_timeout = %q, want vg0/a still shared", got)
	}
	c.hold(1, "a", lvmlock.ModeNone)
	c.advance(dst.helper.NextWake().Sub(c.clock()))
	dst.helper.Tick(ctx)
	if diff := cmp.Diff(lock{2: "ex"}, c.lvm.Holders("vg0", "a")); diff != "" {
		t.Errorf("vg0/a once the other host let go (-want +got):\n%s", diff)
	}
	if got := problemsOf(t, dst); len(got) != 0 {
		t.Errorf("problems once ex: %v", got)
	}
}

// TestPendingDeactivation: a release whose -an failed leaves a pending
// record; the helper retries it for a domain that no longer runs here, and
// leaves the LVs of a domain that runs (or starts) here to its own release.
func TestPendingDeactivation(t *testing.T) {
	for _, tc := range []struct {
		name        string
		runningHere bool
		open        bool
		after       map[int]lvmlock.Mode
		pendingLeft bool
		problem     string
	}{
		{name: "stopped: deactivated", after: lock{}},
		{name: "still open: retried later, reported", open: true, after: lock{1: "ex"}, pendingLeft: true, problem: "left active after vm2 stopped"},
		{name: "started here again: left to its release", runningHere: true, after: lock{1: "ex"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCluster(t, 2)
			h := c.hosts[0]
			c.hold(1, "b", lvmlock.ModeEx)
			if err := h.state.Save(state.PendingDir, state.Record{Name: "vm2", UUID: uuid2,
				LVs: []state.RecordLV{{VG: "vg0", LV: "b"}}}); err != nil {
				t.Fatal(err)
			}
			if tc.runningHere {
				h.lv.run("vm2", uuid2, virt.StateRunning, virt.JobNone, "/dev/vg0/b")
				c.record(1, "vm2", uuid2, false, "b")
			}
			if tc.open {
				c.lvm.Do(func(cl *lvmfake.Cluster) { cl.Open[1][lvmlock.Ref{VG: "vg0", LV: "b"}] = true })
			}
			h.helper.ReconcileAll(context.Background())
			if diff := cmp.Diff(tc.after, c.lvm.Holders("vg0", "b")); diff != "" {
				t.Errorf("vg0/b after a pass (-want +got):\n%s", diff)
			}
			_, pending, err := h.state.Load(state.PendingDir, uuid2)
			if err != nil || pending != tc.pendingLeft {
				t.Errorf("pending record left = %v (%v), want %v", pending, err, tc.pendingLeft)
			}
			got := strings.Join(problemsOf(t, h)["vm2"], "\n")
			if tc.problem == "" && got != "" || !strings.Contains(got, tc.problem) {
				t.Errorf("problems = %q, want one containing %q", got, tc.problem)
			}
		})
	}
}

// TestTickPacing: a full pass every reconcile_interval, retries in between
// only for the domains due.
func TestTickPacing(t *testing.T) {
	c := newTestCluster(t, 1)
	h := c.hosts[0]
	ctx := context.Background()
	interval := h.helper.Config.Daemon.ReconcileInterval.D()
	if got, want := h.helper.NextWake(), c.clock().Add(interval); !got.Equal(want) {
		t.Fatalf("NextWake() after connecting = %v, want %v", got, want)
	}
	h.lv.ResetCalls()
	c.advance(interval / 2)
	h.helper.Tick(ctx)
	early := h.lv.Calls()
	c.advance(interval / 2)
	h.helper.Tick(ctx)
	due := h.lv.Calls()
	if early != 0 || due == 0 {
		t.Errorf("libvirt calls: %d before the interval (want 0), %d at it (want some)", early, due)
	}
	if got, want := h.helper.NextWake(), c.clock().Add(interval); !got.Equal(want) {
		t.Errorf("NextWake() after a pass = %v, want %v", got, want)
	}
}

// TestSourceExclusiveAfterSilentCancel: a migration cancelled (domjobabort) or
// failed before the source guest was paused sends no lifecycle event to the
// source (no RESUMED_MIGRATED: libvirt resumes only a guest it paused), so the
// source stayed sh until the next periodic pass. After a downgrade the source
// watches the job and converts back to ex once it is gone and the destination
// released.
func TestSourceExclusiveAfterSilentCancel(t *testing.T) {
	c := newTestCluster(t, 2)
	src := c.hosts[0]
	src.lv.run("vm1", uuid1, virt.StateRunning, virt.JobMigrationOut, "/dev/vg0/a")
	c.record(1, "vm1", uuid1, false, "a")
	c.hold(1, "a", lvmlock.ModeEx)
	ctx := context.Background()
	src.helper.ReconcileAll(ctx) // the periodic pass has just run
	t0 := c.clock()
	if ans := src.helper.Reserve(ctx, "kvm2", peer.Request{Domain: "vm1", UUID: uuid1, TimeoutMS: 10000}); !ans.Granted {
		t.Fatalf("reservation refused: %s", ans.Reason)
	}
	if ans := src.helper.Downgrade(ctx, "kvm2", req(uuid1, "a")); !ans.Granted {
		t.Fatalf("downgrade refused: %s", ans.Reason)
	}
	c.hold(2, "a", lvmlock.ModeSh) // the destination's prepare
	if got, max := src.helper.NextWake(), c.clock().Add(retryMax); got.After(max) {
		t.Fatalf("NextWake() = %v after a downgrade, want by %v", got, max)
	}
	// While the job runs the source keeps sh and keeps watching.
	c.advance(retryMin)
	src.helper.Tick(ctx)
	if diff := cmp.Diff(lock{1: "sh", 2: "sh"}, c.lvm.Holders("vg0", "a")); diff != "" {
		t.Fatalf("during the migration (-want +got):\n%s", diff)
	}
	// Cancelled: the job ends, the destination's release drops its sh, and
	// no event comes.
	src.lv.SetJob(uuid1, virt.JobNone)
	c.hold(2, "a", lvmlock.ModeNone)
	for i := 0; i < 10 && src.helper.NextWake().Before(c.clock().Add(time.Minute)); i++ {
		c.advance(src.helper.NextWake().Sub(c.clock()))
		src.helper.Tick(ctx)
		if c.lvm.Holders("vg0", "a")[1] == lvmlock.ModeEx {
			break
		}
	}
	if diff := cmp.Diff(lock{1: "ex"}, c.lvm.Holders("vg0", "a")); diff != "" {
		t.Errorf("after the silent cancel (-want +got):\n%s", diff)
	}
	if elapsed := c.clock().Sub(t0); elapsed >= src.helper.Config.Daemon.ReconcileInterval.D() {
		t.Errorf("ex again only after %v: the periodic pass did it, not the job watch", elapsed)
	}
}

// TestProblemsFilesOfAnEarlierRun: when the lock helper starts, a corrupt
// problems file does not make it forget the readable ones, and the corrupt
// file of a domain that is healthy now is removed by the first full pass.
func TestProblemsFilesOfAnEarlierRun(t *testing.T) {
	c := newTestCluster(t, 1)
	h := c.hosts[0]
	h.lv.run("vm1", uuid1, virt.StateRunning, virt.JobNone, "/dev/vg0/a")
	c.record(1, "vm1", uuid1, false, "a")
	c.hold(1, "a", lvmlock.ModeEx)
	// vm2 is gone since; its file says it could not be repaired.
	stale := state.DomainProblems{Name: "vm2", UUID: uuid2, Host: "kvm1", Problems: []state.Problem{{VG: "vg0", LV: "b", What: "LV not found"}}}
	if err := h.state.SaveProblems(stale); err != nil {
		t.Fatal(err)
	}
	corrupt := filepath.Join(h.state.Dir, state.ProblemsDir, uuid1+".json")
	if err := os.WriteFile(corrupt, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The lock helper starts again: a new Helper on the same state.
	restarted := NewHelper(h.helper.Config, h.name, h.helper.LVM, h.state, zerolog.Nop())
	restarted.Now, restarted.JobFlags = c.clock, h.lv.JobFlags
	restarted.Connected(context.Background(), h.lv)
	if _, err := os.Stat(corrupt); !os.IsNotExist(err) {
		t.Errorf("the corrupt problems file of healthy vm1 is still there (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(h.state.Dir, state.ProblemsDir, uuid2+".json")); !os.IsNotExist(err) {
		t.Errorf("the problems file of vm2, which no longer runs, is still there (%v)", err)
	}
}

// cancelledLibvirt is a libvirtd whose calls fail with their ctx's error once
// it has ended, as virt.Conn's do.
type cancelledLibvirt struct{ *fakeLibvirt }

func (c cancelledLibvirt) DomainState(ctx context.Context, uuid string) (virt.DomainState, error) {
	if err := ctx.Err(); err != nil {
		return virt.StateOther, err
	}
	return c.fakeLibvirt.DomainState(ctx, uuid)
}

// TestReconcileCutShortPublishesNothing: a pass stopped midway (SIGTERM) does
// not write what it could not read as problems for `lvhook check`.
func TestReconcileCutShortPublishesNothing(t *testing.T) {
	c := newTestCluster(t, 1)
	h := c.hosts[0]
	h.lv.run("vm1", uuid1, virt.StateRunning, virt.JobNone, "/dev/vg0/a")
	c.record(1, "vm1", uuid1, false, "a")
	c.hold(1, "a", lvmlock.ModeEx)
	h.helper.mu.Lock()
	h.helper.lv = cancelledLibvirt{h.lv}
	h.helper.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	h.helper.ReconcileAll(ctx)
	if got := problemsOf(t, h); len(got) != 0 {
		t.Errorf("problems after a pass cut short: %v, want none", got)
	}
}
