package hook

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"

	"github.com/lvhook/lvhook/config"
	"github.com/lvhook/lvhook/domxml"
	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/lvmlock/lvmfake"
	"github.com/lvhook/lvhook/peer"
	"github.com/lvhook/lvhook/state"
)

// cluster is two hosts on one fake lvmlockd cluster, each with its own hook
// and state directory, as on two real hosts.
type cluster struct {
	t     *testing.T
	lvm   *lvmfake.Cluster
	hosts map[int]*Hook
	now   time.Time
}

func newCluster(t *testing.T) *cluster {
	c := &cluster{t: t, lvm: lvmfake.NewCluster(2), hosts: map[int]*Hook{}, now: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)}
	c.lvm.AddVG("vg0", true, "vm1-root", "vm1-data", "vm1-swap", "pooldisk", "mixed-root", "cluster-fs", "reference", "optout-disk")
	c.lvm.AddVG("vg1", true, "overlay", "golden")
	c.lvm.AddVG("local", false, "scratch")
	for id := 1; id <= 2; id++ {
		cfg := config.Default()
		cfg.StateDir = t.TempDir()
		cfg.StoragePoolDir = poolDir
		c.hosts[id] = &Hook{
			Config: cfg,
			LVM:    &lvmlock.Client{Runner: c.lvm.Host(id), Log: zerolog.Nop()},
			State:  &state.State{Dir: cfg.StateDir, Now: func() time.Time { return c.now }},
			Log:    zerolog.Nop(),
			Sleep:  func(context.Context, time.Duration) error { return nil },
			HostName: func(id int) string {
				return map[int]string{1: "kvm1", 2: "kvm2"}[id]
			},
		}
	}
	return c
}

// call runs one hook call on host with the XML of a testdata domain.
func (c *cluster) call(host int, file, op, subop string) error {
	c.t.Helper()
	xml := readDomain(c.t, file)
	d, err := domxml.Parse(xml, poolDir)
	if err != nil {
		c.t.Fatal(err)
	}
	return c.hosts[host].Run(context.Background(), Call{Domain: d.Name, Op: op, SubOp: subop, Extra: "-"}, xml)
}

// modes returns host -> mode for each LV, for comparison.
func (c *cluster) modes(vg string, lvs ...string) map[string]map[int]lvmlock.Mode {
	out := map[string]map[int]lvmlock.Mode{}
	for _, lv := range lvs {
		out[lv] = c.lvm.Holders(vg, lv)
	}
	return out
}

func held(pairs ...any) map[int]lvmlock.Mode {
	m := map[int]lvmlock.Mode{}
	for i := 0; i < len(pairs); i += 2 {
		m[pairs[i].(int)] = pairs[i+1].(lvmlock.Mode)
	}
	return m
}

var vm1LVs = []string{"vm1-root", "vm1-data", "vm1-swap"}

func (c *cluster) wantModes(step string, vg string, want map[int]lvmlock.Mode, lvs ...string) {
	c.t.Helper()
	wantAll := map[string]map[int]lvmlock.Mode{}
	for _, lv := range lvs {
		wantAll[lv] = want
	}
	if diff := cmp.Diff(wantAll, c.modes(vg, lvs...)); diff != "" {
		c.t.Errorf("%s: lock state mismatch (-want +got):\n%s", step, diff)
	}
}

func wantErr(t *testing.T, step string, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error, want one containing %q", step, parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error %q does not contain %q", step, err, p)
		}
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("%s: error is not one line: %q", step, err)
	}
}

func TestStartStopAndSecondStartRefused(t *testing.T) {
	c := newCluster(t)
	ex := lvmlock.ModeEx

	if err := c.call(1, "block-three.xml", "prepare", "begin"); err != nil {
		t.Fatalf("prepare on host 1: %v", err)
	}
	c.wantModes("after start on 1", "vg0", held(1, ex), vm1LVs...)
	if diff := cmp.Diff([]string{
		"lvchange -aey --select vg_shared=1 -- vg0/vm1-root vg0/vm1-data vg0/vm1-swap",
	}, c.lvm.Calls(1)); diff != "" {
		t.Errorf("lvm calls of a 3-disk start (-want +got):\n%s", diff)
	}

	err := c.call(2, "block-three.xml", "prepare", "begin")
	wantErr(t, "second start on host 2", err,
		"refusing to start vm1: vg0/vm1-root, vg0/vm1-data, vg0/vm1-swap is active on another host (lvmlockd: LV locked by other host); is vm1 running elsewhere?")
	// libvirt follows a failed prepare with release end.
	if err := c.call(2, "block-three.xml", "release", "end"); err != nil {
		t.Errorf("release after refused start: %v", err)
	}
	c.wantModes("after refused start on 2", "vg0", held(1, ex), vm1LVs...)

	if err := c.call(1, "block-three.xml", "release", "end"); err != nil {
		t.Fatalf("release on host 1: %v", err)
	}
	c.wantModes("after stop", "vg0", held(), vm1LVs...)

	if err := c.call(2, "block-three.xml", "prepare", "begin"); err != nil {
		t.Fatalf("start on host 2 after stop on 1: %v", err)
	}
	c.wantModes("after start on 2", "vg0", held(2, ex), vm1LVs...)
}

func TestPartialFailureRollsBack(t *testing.T) {
	c := newCluster(t)
	c.lvm.Do(func(l *lvmfake.Cluster) { l.VGs["vg0"].LVs["vm1-data"].Holders[2] = lvmlock.ModeEx })

	err := c.call(1, "block-three.xml", "prepare", "begin")
	wantErr(t, "start with one LV held on host 2", err, "refusing to start vm1: vg0/vm1-data is active on kvm2 (host_id 2)"[:len("refusing to start vm1: vg0/vm1-data is active on ")])
	c.wantModes("after refused start", "vg0", held(), "vm1-root", "vm1-swap")
	c.wantModes("after refused start", "vg0", held(2, lvmlock.ModeEx), "vm1-data")
}

func TestHolderHostNamed(t *testing.T) {
	c := newCluster(t)
	c.lvm.Intercept = func(host int, args []string) (string, string, error, bool) {
		if args[0] == "lvchange" {
			return "", "  LV locked by other host: vg0/vm1-root (host_id 2)\n  Failed to lock logical volume vg0/vm1-root.\n", lvmfake.ExitError{Code: 5}, true
		}
		return "", "", nil, false
	}
	err := c.call(1, "block-three.xml", "prepare", "begin")
	wantErr(t, "refusal", err, "vg0/vm1-root is active on kvm2 (host_id 2)")
}

// A VG lock failed by the lock manager (ELMERR, seen once on the harness)
// is tried again; if it keeps failing the start is refused with that cause,
// not as a lockspace that is not started.
func TestLockManagerErrorRetried(t *testing.T) {
	c := newCluster(t)
	fails := 1
	c.lvm.Intercept = func(_ int, args []string) (string, string, error, bool) {
		if args[0] == "lvchange" && args[1] == "-aey" && fails > 0 {
			fails--
			return "", "  VG vg0 lock skipped: error -221\n  Cannot access VG vg0 due to failed lock.\n", lvmfake.ExitError{Code: 5}, true
		}
		return "", "", nil, false
	}
	if err := c.call(1, "block-three.xml", "prepare", "begin"); err != nil {
		t.Fatalf("start after one lock manager error: %v", err)
	}
	c.wantModes("started on the second try", "vg0", held(1, lvmlock.ModeEx), vm1LVs...)
	if err := c.call(1, "block-three.xml", "release", "end"); err != nil {
		t.Fatal(err)
	}

	fails = 100
	err := c.call(1, "block-three.xml", "prepare", "begin")
	wantErr(t, "persistent lock manager error", err, "refusing to start vm1: lvmlockd could not lock VG vg0, even when asked again (lvmlockd: VG vg0 lock skipped: error -221)")
	c.wantModes("after the refusal", "vg0", held(), vm1LVs...)
}

// lvm 2.03.16 does not name the holder: the hook reads it from sanlock's
// lease, and says "another host" when sanlock cannot tell.
func TestHolderNamedFromSanlock(t *testing.T) {
	c := newCluster(t)
	c.lvm.Do(func(l *lvmfake.Cluster) { l.VGs["vg0"].LVs["vm1-data"].Holders[2] = lvmlock.ModeEx })
	c.hosts[1].Sanlock = &lvmlock.Sanlock{Runner: c.lvm.Host(1)}
	err := c.call(1, "block-three.xml", "prepare", "begin")
	wantErr(t, "refusal", err, "refusing to start vm1: vg0/vm1-data is active on kvm2 (host_id 2) (lvmlockd: LV locked by other host)")
	c.wantModes("after refused start", "vg0", held(), "vm1-root", "vm1-swap")

	c.lvm.Intercept = func(_ int, args []string) (string, string, error, bool) {
		if args[0] == "sanlock" {
			return "", "sanlock daemon is not running\n", lvmfake.ExitError{Code: 1}, true
		}
		return "", "", nil, false
	}
	err = c.call(1, "block-three.xml", "prepare", "begin")
	wantErr(t, "refusal without sanlock", err, "refusing to start vm1: vg0/vm1-data is active on another host (lvmlockd: LV locked by other host)")
}

func TestRefusalLines(t *testing.T) {
	tests := []struct {
		name    string
		arrange func(l *lvmfake.Cluster)
		want    string
	}{
		{"lockspace not started", func(l *lvmfake.Cluster) { l.Started[1]["vg0"] = false },
			"refusing to start vm1: the lockspace of VG vg0 is not started on this host; run `vgchange --lock-start vg0`"},
		{"lvmlockd not running", func(l *lvmfake.Cluster) { l.Lvmlockd[1] = false },
			"refusing to start vm1: lvmlockd is not running on this host"},
		{"LV missing", func(l *lvmfake.Cluster) { delete(l.VGs["vg0"].LVs, "vm1-swap") },
			"refusing to start vm1: disk vdc: LV vg0/vm1-swap not found"},
		{"VG missing", func(l *lvmfake.Cluster) { delete(l.VGs, "vg0") },
			"refusing to start vm1: disk vda: volume group vg0 not found (source /dev/vg0/vm1-root)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster(t)
			c.lvm.Do(tt.arrange)
			err := c.call(1, "block-three.xml", "prepare", "begin")
			wantErr(t, tt.name, err, tt.want)
			c.wantModes(tt.name, "vg0", held(), vm1LVs...)
		})
	}
}

func TestLockspaceStartingIsRetried(t *testing.T) {
	c := newCluster(t)
	tries := 0
	c.lvm.Intercept = func(host int, args []string) (string, string, error, bool) {
		if args[0] == "lvchange" && tries < 1 {
			tries++
			return "", "  VG vg0 lock skipped: lock start in progress\n", lvmfake.ExitError{Code: 5}, true
		}
		return "", "", nil, false
	}
	if err := c.call(1, "block-three.xml", "prepare", "begin"); err != nil {
		t.Fatalf("prepare: %v", err)
	}
	c.wantModes("after retry", "vg0", held(1, lvmlock.ModeEx), vm1LVs...)
}

func TestStartWaitsForStartingLockspace(t *testing.T) {
	starting := "  VG vg0 lock skipped: lock start in progress\n"
	tests := []struct {
		name     string
		wait     time.Duration
		refusals int // lvchange calls refused with "lock start in progress"
		want     string
	}{
		// 3 tries of retry (shared_retries 2), then a try every 2 s.
		{"lockspace up within the wait", time.Minute, 12, ""},
		{"still starting at the bound", 10 * time.Second, 1000,
			"refusing to start vm1: the lockspace of VG vg0 is still starting on this host after 10s (lockspace_wait); retry once `lvmlockctl -i` lists it, or see `sanlock client status`"},
		{"no wait configured", 0, 1000,
			"refusing to start vm1: the lockspace of VG vg0 is still starting on this host; retry in a minute (lvmlockctl -i shows it)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster(t)
			c.hosts[1].Config.LockspaceWait = config.Duration(tt.wait)
			var slept time.Duration
			c.hosts[1].Sleep = func(_ context.Context, d time.Duration) error { slept += d; return nil }
			tries := 0
			c.lvm.Intercept = func(host int, args []string) (string, string, error, bool) {
				if args[0] == "lvchange" && tries < tt.refusals {
					tries++
					return "", starting, lvmfake.ExitError{Code: 5}, true
				}
				return "", "", nil, false
			}
			err := c.call(1, "block-three.xml", "prepare", "begin")
			if tt.want == "" {
				if err != nil {
					t.Fatalf("prepare: %v", err)
				}
				c.wantModes("after the wait", "vg0", held(1, lvmlock.ModeEx), vm1LVs...)
				return
			}
			wantErr(t, tt.name, err, tt.want)
			c.wantModes("after the refusal", "vg0", held(), vm1LVs...)
			if max := 3*time.Second + tt.wait; slept > max {
				t.Errorf("slept %s, past retries and lockspace_wait (%s)", slept, max)
			}
		})
	}
}

func TestLiveMigrationDestination(t *testing.T) {
	ex, sh := lvmlock.ModeEx, lvmlock.ModeSh
	t.Run("source still ex: refused, source keeps ex", func(t *testing.T) {
		c := newCluster(t)
		if err := c.call(1, "block-three.xml", "prepare", "begin"); err != nil {
			t.Fatal(err)
		}
		if err := c.call(2, "block-three.xml", "migrate", "begin"); err != nil {
			t.Fatalf("migrate begin: %v", err)
		}
		c.wantModes("after migrate begin", "vg0", held(1, ex), vm1LVs...)
		err := c.call(2, "block-three.xml", "prepare", "begin")
		wantErr(t, "prepare of incoming migration without peers", err,
			"refusing to start vm1: vg0/vm1-root, vg0/vm1-data, vg0/vm1-swap is active on another host (lvmlockd: LV locked by other host); is vm1 running elsewhere?",
			"(an incoming live migration got no lock handover: no [[daemon.peer]] configured)")
		c.wantModes("after refused migration", "vg0", held(1, ex), vm1LVs...)
	})
	t.Run("source downgraded: sh on both, then ex on destination", func(t *testing.T) {
		c := newCluster(t)
		if err := c.call(1, "block-three.xml", "prepare", "begin"); err != nil {
			t.Fatal(err)
		}
		handover := 0
		c.hosts[2].Handover = &fakeHandover{source: "kvm1", downgrade: func(ctx context.Context, source string, d *domxml.Domain, refs []lvmlock.Ref) error {
			handover++
			if source != "kvm1" {
				t.Errorf("downgrade asked of %q, want kvm1 (the peer that reserved)", source)
			}
			// What the source's lock helper does: ex -> sh there.
			_, err := (&lvmlock.Client{Runner: c.lvm.Host(1), Log: zerolog.Nop()}).Activate(ctx,
				&lvmlock.State{LVs: map[lvmlock.Ref]lvmlock.LV{}}, []lvmlock.Target{
					{Ref: refs[0], Mode: sh}, {Ref: refs[1], Mode: sh}, {Ref: refs[2], Mode: sh}})
			return err
		}}
		if err := c.call(2, "block-three.xml", "migrate", "begin"); err != nil {
			t.Fatal(err)
		}
		if err := c.call(2, "block-three.xml", "prepare", "begin"); err != nil {
			t.Fatalf("prepare of incoming migration: %v", err)
		}
		if handover != 1 {
			t.Errorf("handover asked %d times, want 1", handover)
		}
		c.wantModes("during migration", "vg0", held(1, sh, 2, sh), vm1LVs...)
		rec, ok, err := c.hosts[2].State.Load(state.DomainsDir, "6f1c5b7e-2a1d-4c53-9a43-2b8f0d1e7c11")
		if err != nil || !ok || !rec.Incoming {
			t.Errorf("destination record = %+v, %v, %v; want an Incoming record", rec, ok, err)
		}
		// Source Confirm: release end there.
		if err := c.call(1, "block-three.xml", "release", "end"); err != nil {
			t.Fatal(err)
		}
		c.wantModes("after source release", "vg0", held(2, sh), vm1LVs...)
	})
	t.Run("expired marker: an ordinary start takes ex", func(t *testing.T) {
		c := newCluster(t)
		if err := c.call(2, "block-three.xml", "migrate", "begin"); err != nil {
			t.Fatal(err)
		}
		c.now = c.now.Add(2 * time.Minute)
		if err := c.call(2, "block-three.xml", "prepare", "begin"); err != nil {
			t.Fatal(err)
		}
		c.wantModes("start after an old offline migration", "vg0", held(2, ex), vm1LVs...)
	})
	t.Run("offline migration activates nothing", func(t *testing.T) {
		c := newCluster(t)
		if err := c.call(2, "block-three.xml", "migrate", "begin"); err != nil {
			t.Fatal(err)
		}
		c.wantModes("after offline migration", "vg0", held(), vm1LVs...)
		if calls := c.lvm.Calls(2); len(calls) != 0 {
			t.Errorf("migrate begin ran lvm: %q", calls)
		}
	})
}

func TestSharedLVStaysForOtherDomain(t *testing.T) {
	c := newCluster(t)
	sh := lvmlock.ModeSh
	c.lvm.AddVG("vg2", true, "overlay2")
	other := strings.NewReplacer("vm-shared", "vm-shared2", "c0ffee00-1111", "c0ffee00-2222", "/dev/vg1/overlay", "/dev/vg2/overlay2")
	xml2 := []byte(other.Replace(string(readDomain(t, "shared-backing.xml"))))
	run2 := func(host int, op, subop string) error {
		return c.hosts[host].Run(context.Background(), Call{Domain: "vm-shared2", Op: op, SubOp: subop}, xml2)
	}
	if err := c.call(1, "shared-backing.xml", "prepare", "begin"); err != nil {
		t.Fatal(err)
	}
	if err := run2(1, "prepare", "begin"); err != nil {
		t.Fatalf("second domain with the same shareable LVs on the same host: %v", err)
	}
	if err := c.call(1, "shared-backing.xml", "release", "end"); err != nil {
		t.Fatal(err)
	}
	c.wantModes("shareable LVs after one user stopped", "vg0", held(1, sh), "cluster-fs", "reference")
	c.wantModes("backing LV after one user stopped", "vg1", held(1, sh), "golden")
	c.wantModes("private LV after stop", "vg1", held(), "overlay")

	// Shareable and backing LVs are sh, so another host can use them too.
	if err := c.call(2, "shared-backing.xml", "prepare", "begin"); err != nil {
		t.Fatalf("shareable LVs on a second host: %v", err)
	}
	c.wantModes("shareable LVs on two hosts", "vg0", held(1, sh, 2, sh), "cluster-fs", "reference")
	if err := run2(1, "release", "end"); err != nil {
		t.Fatal(err)
	}
	c.wantModes("last user on host 1 stopped", "vg0", held(2, sh), "cluster-fs", "reference")
}

func TestNeverFails(t *testing.T) {
	c := newCluster(t)
	c.lvm.Do(func(l *lvmfake.Cluster) { l.Lvmlockd[1] = false })
	for _, op := range [][2]string{{"reconnect", "begin"}, {"attach", "begin"}, {"newop", "begin"}} {
		if err := c.call(1, "block-three.xml", op[0], op[1]); err != nil {
			t.Errorf("%s %s failed: %v", op[0], op[1], err)
		}
		if err := c.hosts[1].Run(context.Background(), Call{Domain: "vm1", Op: op[0], SubOp: op[1]}, []byte("<not-xml")); err != nil {
			t.Errorf("%s %s with broken XML failed: %v", op[0], op[1], err)
		}
	}
	for _, op := range [][2]string{{"start", "begin"}, {"started", "begin"}, {"stopped", "end"}, {"restore", "begin"}} {
		if err := c.call(1, "block-three.xml", op[0], op[1]); err != nil {
			t.Errorf("%s %s failed: %v", op[0], op[1], err)
		}
	}
	if calls := c.lvm.Calls(1); len(calls) != 3 {
		t.Errorf("verify ops ran %d lvm calls, want one lvs each for reconnect, attach and the unknown op: %q", len(calls), calls)
	}
}

func TestReconnectAdoptsRunningDomain(t *testing.T) {
	c := newCluster(t)
	if err := c.call(1, "block-three.xml", "prepare", "begin"); err != nil {
		t.Fatal(err)
	}
	// lvhook's state lost (an upgrade from a version without it).
	st := c.hosts[1].State
	if err := st.Remove(state.DomainsDir, "6f1c5b7e-2a1d-4c53-9a43-2b8f0d1e7c11"); err != nil {
		t.Fatal(err)
	}
	if err := c.call(1, "block-three.xml", "reconnect", "begin"); err != nil {
		t.Fatal(err)
	}
	c.wantModes("reconnect changes no lock", "vg0", held(1, lvmlock.ModeEx), vm1LVs...)
	if _, ok, _ := st.Load(state.DomainsDir, "6f1c5b7e-2a1d-4c53-9a43-2b8f0d1e7c11"); !ok {
		t.Errorf("reconnect did not record the running domain")
	}
}

func TestOptOutAndDryRun(t *testing.T) {
	c := newCluster(t)
	if err := c.call(1, "optout.xml", "prepare", "begin"); err != nil {
		t.Fatal(err)
	}
	if calls := c.lvm.Calls(1); len(calls) != 0 {
		t.Errorf("opted-out domain ran lvm: %q", calls)
	}
	c.hosts[1].LVM.DryRun = true
	if err := c.call(1, "block-three.xml", "prepare", "begin"); err != nil {
		t.Fatal(err)
	}
	c.wantModes("dry run", "vg0", held(), vm1LVs...)
	for _, call := range c.lvm.Calls(1) {
		if strings.HasPrefix(call, "lvchange") {
			t.Errorf("dry run ran %q", call)
		}
	}
}

func TestSharedActivationImpossible(t *testing.T) {
	c := newCluster(t)
	c.lvm.Do(func(l *lvmfake.Cluster) { l.VGs["vg0"].LVs["cluster-fs"].Segtype = "thin" })
	err := c.call(1, "shared-backing.xml", "prepare", "begin")
	wantErr(t, "thin shareable", err, "refusing to start vm-shared: vg0/cluster-fs cannot be activated shared (lvmlockd: Shared activation not compatible with LV type thin of vg0/cluster-fs)")
	c.wantModes("after refusal", "vg0", held(), "cluster-fs", "reference")
	c.wantModes("after refusal", "vg1", held(), "overlay", "golden")
}

func TestNonSharedVGLeftAlone(t *testing.T) {
	c := newCluster(t)
	xml := []byte(`<domain><name>loc</name><uuid>12345678-1234-1234-1234-123456789abc</uuid><devices>
<disk type='block'><source dev='/dev/local/scratch'/><target dev='vda'/></disk></devices></domain>`)
	if err := c.hosts[1].Run(context.Background(), Call{Domain: "loc", Op: "prepare", SubOp: "begin"}, xml); err != nil {
		t.Fatal(err)
	}
	c.wantModes("local VG", "local", held(), "scratch")
}

func TestSameLVTwoDomainsOneHostRefused(t *testing.T) {
	c := newCluster(t)
	if err := c.call(1, "block-three.xml", "prepare", "begin"); err != nil {
		t.Fatal(err)
	}
	clone := strings.NewReplacer("<name>vm1</name>", "<name>vm1-clone</name>", "6f1c5b7e-2a1d", "6f1c5b7e-ffff")
	xml := []byte(clone.Replace(string(readDomain(t, "block-three.xml"))))
	err := c.hosts[1].Run(context.Background(), Call{Domain: "vm1-clone", Op: "prepare", SubOp: "begin"}, xml)
	wantErr(t, "clone on the same host", err, "refusing to start vm1-clone: vg0/vm1-root is already used by domain vm1 on this host")
	// Its failed start's release must not take vm1's LVs away.
	if err := c.hosts[1].Run(context.Background(), Call{Domain: "vm1-clone", Op: "release", SubOp: "end"}, xml); err != nil {
		t.Fatal(err)
	}
	c.wantModes("vm1 after its clone was refused", "vg0", held(1, lvmlock.ModeEx), vm1LVs...)
}

// An offline migration leaves migrate begin's marker; a start within
// marker_ttl then finds no peer with the domain migrating out. With nobody
// holding the LVs it is an ordinary start (ex); with the source holding them
// it stays refused.
// fakeHandover is a Handover whose source is source (none when empty) and
// whose downgrade is downgrade (a refusal when nil). holders records the
// lease holder each reservation was given.
type fakeHandover struct {
	source    string
	downgrade func(ctx context.Context, source string, d *domxml.Domain, refs []lvmlock.Ref) error
	holders   []int
}

func (f *fakeHandover) Reserve(_ context.Context, _ *domxml.Domain, holder int) (string, error) {
	f.holders = append(f.holders, holder)
	if f.source == "" {
		return "", fmt.Errorf("%w (kvm1: domain is shut off on kvm1)", peer.ErrRefused)
	}
	return f.source, nil
}

func (f *fakeHandover) Downgrade(ctx context.Context, source string, d *domxml.Domain, refs []lvmlock.Ref) error {
	if f.downgrade == nil {
		return fmt.Errorf("%w (%s: no handover reserved for this migration job)", peer.ErrRefused, source)
	}
	return f.downgrade(ctx, source, d, refs)
}

func TestRefusedHandoverFallsBackToStart(t *testing.T) {
	refused := &fakeHandover{}
	t.Run("offline migration then start", func(t *testing.T) {
		c := newCluster(t)
		c.hosts[2].Handover = refused
		if err := c.call(2, "block-three.xml", "migrate", "begin"); err != nil {
			t.Fatal(err)
		}
		if err := c.call(2, "block-three.xml", "prepare", "begin"); err != nil {
			t.Fatalf("start after an offline migration: %v", err)
		}
		c.wantModes("start after an offline migration", "vg0", held(2, lvmlock.ModeEx), vm1LVs...)
		rec, _, _ := c.hosts[2].State.Load(state.DomainsDir, "6f1c5b7e-2a1d-4c53-9a43-2b8f0d1e7c11")
		if rec.Incoming {
			t.Errorf("record marked incoming after an ordinary start")
		}
	})
	t.Run("source still holds ex", func(t *testing.T) {
		c := newCluster(t)
		c.hosts[2].Handover = refused
		if err := c.call(1, "block-three.xml", "prepare", "begin"); err != nil {
			t.Fatal(err)
		}
		if err := c.call(2, "block-three.xml", "migrate", "begin"); err != nil {
			t.Fatal(err)
		}
		err := c.call(2, "block-three.xml", "prepare", "begin")
		wantErr(t, "migration with a silent source", err, "refusing to start vm1: vg0/vm1-root, vg0/vm1-data, vg0/vm1-swap is active on another host (lvmlockd: LV locked by other host); is vm1 running elsewhere?",
			"(an incoming live migration got no lock handover: no peer agreed to hand its locks over (kvm1: domain is shut off on kvm1))")
		c.wantModes("source keeps ex", "vg0", held(1, lvmlock.ModeEx), vm1LVs...)
	})
}

const poolDir = "../testdata/pools"

func readDomain(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("../testdata/domains", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestRefusedStartIsRecorded(t *testing.T) {
	c := newCluster(t)
	if err := c.call(2, "block-three.xml", "prepare", "begin"); err != nil {
		t.Fatal(err)
	}
	err := c.call(1, "block-three.xml", "prepare", "begin")
	wantErr(t, "refusal", err, "refusing to start vm1:")
	recs, err := c.hosts[1].State.AllRefused()
	if err != nil || len(recs) != 1 {
		t.Fatalf("refused records %v (%v), want one", recs, err)
	}
	if r := recs[0]; r.Name != "vm1" || !strings.HasPrefix(r.Line, "refusing to start vm1: ") || !r.At.Equal(c.now) {
		t.Errorf("record %+v", r)
	}
	if err := c.call(2, "block-three.xml", "release", "end"); err != nil {
		t.Fatal(err)
	}
	if err := c.call(1, "block-three.xml", "prepare", "begin"); err != nil {
		t.Fatal(err)
	}
	if recs, _ := c.hosts[1].State.AllRefused(); len(recs) != 0 {
		t.Errorf("records left after a start that succeeded: %v", recs)
	}
}
