package migration

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/peer"
	"github.com/lvhook/lvhook/virt"
)

// TestDowngrade: the source's lock helper says yes only for a domain running
// here with an outgoing migration job, for LVs that are its own and held
// here; it converts ex -> sh and nothing else.
func TestDowngrade(t *testing.T) {
	type lock map[int]lvmlock.Mode
	for _, tc := range []struct {
		name string
		// setup arranges host 1 (the source) and the lock table.
		setup   func(c *testCluster)
		req     peer.Request
		peer    string
		granted bool
		reason  string // a substring of the refusal
		after   map[string]map[int]lvmlock.Mode
	}{{
		name: "outgoing migration: ex becomes sh",
		setup: func(c *testCluster) {
			c.hosts[0].lv.run("vm1", uuid1, virt.StateRunning, virt.JobMigrationOut, "/dev/vg0/a", "/dev/vg0/b")
			c.hold(1, "a", lvmlock.ModeEx)
			c.hold(1, "b", lvmlock.ModeEx)
		},
		req: req(uuid1, "a", "b"), peer: "kvm2", granted: true,
		after: map[string]map[int]lvmlock.Mode{"a": lock{1: "sh"}, "b": lock{1: "sh"}},
	}, {
		name: "paused source (end of Perform) still hands over",
		setup: func(c *testCluster) {
			c.hosts[0].lv.run("vm1", uuid1, virt.StatePaused, virt.JobMigrationOut, "/dev/vg0/a")
			c.hold(1, "a", lvmlock.ModeEx)
		},
		req: req(uuid1, "a"), peer: "kvm2", granted: true,
		after: map[string]map[int]lvmlock.Mode{"a": lock{1: "sh"}},
	}, {
		name: "no job: forged request refused, ex kept",
		setup: func(c *testCluster) {
			c.hosts[0].lv.run("vm1", uuid1, virt.StateRunning, virt.JobNone, "/dev/vg0/a")
			c.hold(1, "a", lvmlock.ModeEx)
		},
		req: req(uuid1, "a"), peer: "kvm2", reason: "no outgoing migration job",
		after: map[string]map[int]lvmlock.Mode{"a": lock{1: "ex"}},
	}, {
		name: "incoming job is no outgoing one",
		setup: func(c *testCluster) {
			c.hosts[0].lv.run("vm1", uuid1, virt.StatePaused, virt.JobMigrationIn, "/dev/vg0/a")
			c.hold(1, "a", lvmlock.ModeSh)
		},
		req: req(uuid1, "a"), peer: "kvm2", reason: "no outgoing migration job",
		after: map[string]map[int]lvmlock.Mode{"a": lock{1: "sh"}},
	}, {
		name: "crashed domain (QEMU kept) cannot migrate: refused",
		setup: func(c *testCluster) {
			c.hosts[0].lv.run("vm1", uuid1, virt.StateCrashed, virt.JobMigrationOut, "/dev/vg0/a")
			c.hold(1, "a", lvmlock.ModeEx)
		},
		req: req(uuid1, "a"), peer: "kvm2", reason: "is crashed on kvm1",
		after: map[string]map[int]lvmlock.Mode{"a": lock{1: "ex"}},
	}, {
		name: "domain not running here",
		setup: func(c *testCluster) {
			c.hold(1, "a", lvmlock.ModeEx)
		},
		req: req(uuid1, "a"), peer: "kvm2", reason: "does not run on kvm1",
		after: map[string]map[int]lvmlock.Mode{"a": lock{1: "ex"}},
	}, {
		name: "LV of another domain refused",
		setup: func(c *testCluster) {
			c.hosts[0].lv.run("vm1", uuid1, virt.StateRunning, virt.JobMigrationOut, "/dev/vg0/a")
			c.hold(1, "a", lvmlock.ModeEx)
			c.hold(1, "other", lvmlock.ModeEx)
		},
		req: req(uuid1, "a", "other"), peer: "kvm2", reason: "vg0/other is not a disk of vm1",
		after: map[string]map[int]lvmlock.Mode{"a": lock{1: "ex"}, "other": lock{1: "ex"}},
	}, {
		name: "LV not active here: never activated",
		setup: func(c *testCluster) {
			c.hosts[0].lv.run("vm1", uuid1, virt.StateRunning, virt.JobMigrationOut, "/dev/vg0/a", "/dev/vg0/b")
			c.hold(1, "a", lvmlock.ModeEx)
		},
		req: req(uuid1, "a", "b"), peer: "kvm2", reason: "vg0/b is not active on kvm1",
		after: map[string]map[int]lvmlock.Mode{"a": lock{1: "ex"}, "b": lock{}},
	}, {
		name: "still shared with a third host from an earlier migration",
		setup: func(c *testCluster) {
			c.hosts[0].lv.run("vm1", uuid1, virt.StateRunning, virt.JobMigrationOut, "/dev/vg0/a")
			c.hold(1, "a", lvmlock.ModeSh)
			c.hold(3, "a", lvmlock.ModeSh)
		},
		req: req(uuid1, "a"), peer: "kvm2", reason: "another host holds it",
		after: map[string]map[int]lvmlock.Mode{"a": lock{1: "sh", 3: "sh"}},
	}, {
		name: "still shared from a cancelled migration, nobody else: taken back, then handed over",
		setup: func(c *testCluster) {
			c.hosts[0].lv.run("vm1", uuid1, virt.StateRunning, virt.JobMigrationOut, "/dev/vg0/a")
			c.hold(1, "a", lvmlock.ModeSh)
		},
		req: req(uuid1, "a"), peer: "kvm2", granted: true,
		after: map[string]map[int]lvmlock.Mode{"a": lock{1: "sh"}},
	}, {
		name: "shareable disk stays sh, handed over as is",
		setup: func(c *testCluster) {
			c.hosts[0].lv.run("vm1", uuid1, virt.StateRunning, virt.JobMigrationOut, "/dev/vg0/a", "shareable:/dev/vg0/iso")
			c.hold(1, "a", lvmlock.ModeEx)
			c.hold(1, "iso", lvmlock.ModeSh)
			c.hold(3, "iso", lvmlock.ModeSh)
		},
		req: req(uuid1, "a", "iso"), peer: "kvm2", granted: true,
		after: map[string]map[int]lvmlock.Mode{"a": lock{1: "sh"}, "iso": lock{1: "sh", 3: "sh"}},
	}, {
		name: "malformed uuid",
		setup: func(c *testCluster) {
		},
		req: req("../../etc", "a"), peer: "kvm2", reason: "malformed request",
		after: map[string]map[int]lvmlock.Mode{"a": lock{}},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCluster(t, 3)
			tc.setup(c)
			// The destination's migrate begin reserved the handover.
			c.hosts[0].helper.Reserve(context.Background(), tc.peer, peer.Request{Domain: "vm1", UUID: tc.req.UUID, TimeoutMS: 10000})
			ans := c.hosts[0].helper.Downgrade(context.Background(), tc.peer, tc.req)
			if ans.Granted != tc.granted || !strings.Contains(ans.Reason, tc.reason) || ans.Host != "kvm1" {
				t.Errorf("Downgrade() = %+v, want granted=%v with reason containing %q", ans, tc.granted, tc.reason)
			}
			var lvs []string
			for lv := range tc.after {
				lvs = append(lvs, lv)
			}
			if diff := cmp.Diff(tc.after, c.holders(lvs...)); diff != "" {
				t.Errorf("locks after Downgrade mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDowngradeIsIdempotentPerDestination: a repeated request (lost answer)
// of the same destination for the same job gets yes again; another host
// asking for the same migration gets no.
func TestDowngradeIsIdempotentPerDestination(t *testing.T) {
	c := newTestCluster(t, 3)
	c.hosts[0].lv.run("vm1", uuid1, virt.StateRunning, virt.JobMigrationOut, "/dev/vg0/a")
	c.hold(1, "a", lvmlock.ModeEx)
	h := c.hosts[0].helper
	ctx := context.Background()
	h.Reserve(ctx, "kvm2", peer.Request{Domain: "vm1", UUID: uuid1, TimeoutMS: 10000})
	var got []bool
	for _, from := range []string{"kvm2", "kvm2", "kvm3"} {
		got = append(got, h.Downgrade(ctx, from, req(uuid1, "a")).Granted)
	}
	if diff := cmp.Diff([]bool{true, true, false}, got); diff != "" {
		t.Errorf("granted per request mismatch (-want +got):\n%s", diff)
	}
}

// TestDowngradeWithoutLibvirt: a helper that lost libvirtd says no.
func TestDowngradeWithoutLibvirt(t *testing.T) {
	c := newTestCluster(t, 2)
	c.hosts[0].lv.run("vm1", uuid1, virt.StateRunning, virt.JobMigrationOut, "/dev/vg0/a")
	c.hold(1, "a", lvmlock.ModeEx)
	c.hosts[0].helper.Disconnected()
	ans := c.hosts[0].helper.Downgrade(context.Background(), "kvm2", req(uuid1, "a"))
	if ans.Granted || !strings.Contains(ans.Reason, "not connected to libvirt") {
		t.Errorf("Downgrade() = %+v, want a refusal: not connected", ans)
	}
	if diff := cmp.Diff(map[int]lvmlock.Mode{1: "ex"}, c.lvm.Holders("vg0", "a")); diff != "" {
		t.Errorf("holders mismatch (-want +got):\n%s", diff)
	}
}
