package migration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/peer"
	"github.com/lvhook/lvhook/virt"
)

func reserveReq(uuid string) peer.Request {
	return peer.Request{Domain: "vm1", UUID: uuid, TimeoutMS: 10000}
}

// TestThirdHostCannotTakeTheHandover: kvm1 live-migrates vm1 to kvm2; kvm3,
// holding a stale marker, starts vm1 and asks kvm1 first. kvm1 must say no
// to kvm3 (found by review: it granted the first asker, and vm1 ran on kvm1
// and kvm3 at once) and yes to kvm2, whose migrate begin reserved it.
func TestThirdHostCannotTakeTheHandover(t *testing.T) {
	c := newTestCluster(t, 3)
	c.hosts[0].lv.run("vm1", uuid1, virt.StateRunning, virt.JobMigrationOut, "/dev/vg0/a")
	c.hold(1, "a", lvmlock.ModeEx)
	h, ctx := c.hosts[0].helper, context.Background()
	ans := h.Downgrade(ctx, "kvm3", req(uuid1, "a"))
	if ans.Granted || !strings.Contains(ans.Reason, "no handover of vm1 is reserved") {
		t.Errorf("kvm3's downgrade request without a reservation = %+v, want refused", ans)
	}
	if ans := h.Reserve(ctx, "kvm2", reserveReq(uuid1)); !ans.Granted {
		t.Fatalf("kvm2's reservation refused: %s", ans.Reason)
	}
	if ans := h.Downgrade(ctx, "kvm3", req(uuid1, "a")); ans.Granted || !strings.Contains(ans.Reason, "reserved for kvm2") {
		t.Errorf("kvm3's downgrade request after kvm2's reservation = %+v, want refused", ans)
	}
	if diff := cmp.Diff(map[int]lvmlock.Mode{1: lvmlock.ModeEx}, c.lvm.Holders("vg0", "a")); diff != "" {
		t.Errorf("holders after kvm3's requests (-want +got):\n%s", diff)
	}
	if ans := h.Downgrade(ctx, "kvm2", req(uuid1, "a")); !ans.Granted {
		t.Errorf("kvm2's downgrade refused: %s", ans.Reason)
	}
	if diff := cmp.Diff(map[int]lvmlock.Mode{1: lvmlock.ModeSh}, c.lvm.Holders("vg0", "a")); diff != "" {
		t.Errorf("holders after kvm2's downgrade (-want +got):\n%s", diff)
	}
}

// TestContestedReservation: two hosts asking for the same job's handover
// cannot both be its destination, and the source cannot tell which is:
// neither gets it, and the one that asked first loses it too.
func TestContestedReservation(t *testing.T) {
	c := newTestCluster(t, 3)
	c.hosts[0].lv.run("vm1", uuid1, virt.StateRunning, virt.JobMigrationOut, "/dev/vg0/a")
	c.hold(1, "a", lvmlock.ModeEx)
	h, ctx := c.hosts[0].helper, context.Background()
	var got []bool
	for _, from := range []string{"kvm3", "kvm3", "kvm2", "kvm3"} {
		got = append(got, h.Reserve(ctx, from, reserveReq(uuid1)).Granted)
	}
	if diff := cmp.Diff([]bool{true, true, false, false}, got); diff != "" {
		t.Errorf("reservations granted (-want +got):\n%s", diff)
	}
	for _, from := range []string{"kvm2", "kvm3"} {
		if ans := h.Downgrade(ctx, from, req(uuid1, "a")); ans.Granted || !strings.Contains(ans.Reason, "neither gets it") {
			t.Errorf("Downgrade(%s) of a contested job = %+v, want refused", from, ans)
		}
	}
	if diff := cmp.Diff(map[int]lvmlock.Mode{1: lvmlock.ModeEx}, c.lvm.Holders("vg0", "a")); diff != "" {
		t.Errorf("holders (-want +got):\n%s", diff)
	}
}

// TestReservationIsBoundToTheJob: a reservation made during one migration
// job is worth nothing in the next one (a stale marker of an old job).
func TestReservationIsBoundToTheJob(t *testing.T) {
	c := newTestCluster(t, 3)
	src := c.hosts[0]
	src.lv.run("vm1", uuid1, virt.StateRunning, virt.JobMigrationOut, "/dev/vg0/a")
	c.hold(1, "a", lvmlock.ModeEx)
	ctx := context.Background()
	if ans := src.helper.Reserve(ctx, "kvm3", reserveReq(uuid1)); !ans.Granted {
		t.Fatalf("reservation refused: %s", ans.Reason)
	}
	// That job ends; a new one starts a minute later (the fake reports the
	// same elapsed time, so its start moves with the clock).
	src.lv.SetJob(uuid1, virt.JobNone)
	c.advance(time.Minute)
	src.lv.SetJob(uuid1, virt.JobMigrationOut)
	if ans := src.helper.Downgrade(ctx, "kvm3", req(uuid1, "a")); ans.Granted || !strings.Contains(ans.Reason, "current migration job") {
		t.Errorf("Downgrade with the old job's reservation = %+v, want refused", ans)
	}
	if ans := src.helper.Reserve(ctx, "kvm2", reserveReq(uuid1)); !ans.Granted {
		t.Errorf("the new job's destination could not reserve: %s", ans.Reason)
	}
}

// TestOfflineMigrationReservesNothing: an offline migration of a running
// domain holds the same outgoing job on the source as a live one; only
// libvirt's job flags tell them apart, and it reserves nothing.
func TestOfflineMigrationReservesNothing(t *testing.T) {
	c := newTestCluster(t, 2)
	src := c.hosts[0]
	src.lv.run("vm1", uuid1, virt.StateRunning, virt.JobMigrationOut, "/dev/vg0/a")
	d := src.lv.Domain(uuid1)
	src.lv.Do(func() { d.Offline = true })
	c.hold(1, "a", lvmlock.ModeEx)
	ctx := context.Background()
	if ans := src.helper.Reserve(ctx, "kvm2", reserveReq(uuid1)); ans.Granted || !strings.Contains(ans.Reason, "offline") {
		t.Errorf("Reserve during an offline migration = %+v, want refused", ans)
	}
	if ans := src.helper.Downgrade(ctx, "kvm2", req(uuid1, "a")); ans.Granted {
		t.Errorf("Downgrade after an offline migration granted")
	}
	if diff := cmp.Diff(map[int]lvmlock.Mode{1: lvmlock.ModeEx}, c.lvm.Holders("vg0", "a")); diff != "" {
		t.Errorf("holders (-want +got):\n%s", diff)
	}
}

// TestReserveRefusals: what a source answers to reservations it must not
// make, and that none of them touches a lock.
func TestReserveRefusals(t *testing.T) {
	for _, tc := range []struct {
		name   string
		setup  func(c *testCluster)
		peer   string
		req    peer.Request
		reason string
	}{
		{name: "no job", setup: func(c *testCluster) { c.hosts[0].lv.run("vm1", uuid1, virt.StateRunning, virt.JobNone, "/dev/vg0/a") },
			peer: "kvm2", req: reserveReq(uuid1), reason: "no outgoing migration job"},
		{name: "not running here", setup: func(c *testCluster) {}, peer: "kvm2", req: reserveReq(uuid1), reason: "does not run on kvm1"},
		{name: "from itself", setup: func(c *testCluster) {
			c.hosts[0].lv.run("vm1", uuid1, virt.StateRunning, virt.JobMigrationOut, "/dev/vg0/a")
		},
			peer: "kvm1", req: reserveReq(uuid1), reason: "to itself"},
		{name: "malformed uuid", setup: func(c *testCluster) {}, peer: "kvm2", req: reserveReq("../x"), reason: "malformed"},
		{name: "LVs named", setup: func(c *testCluster) {
			c.hosts[0].lv.run("vm1", uuid1, virt.StateRunning, virt.JobMigrationOut, "/dev/vg0/a")
		},
			peer: "kvm2", req: req(uuid1, "a"), reason: "malformed"},
		{name: "status file unreadable", setup: func(c *testCluster) {
			c.hosts[0].lv.run("vm1", uuid1, virt.StateRunning, virt.JobMigrationOut, "/dev/vg0/a")
			c.hosts[0].helper.JobFlags = nil // the real reader, on a host with no libvirt
		}, peer: "kvm2", req: reserveReq(uuid1), reason: "cannot tell whether the migration of vm1 on kvm1 is live"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCluster(t, 2)
			c.hold(1, "a", lvmlock.ModeEx)
			tc.setup(c)
			ans := c.hosts[0].helper.Reserve(context.Background(), tc.peer, tc.req)
			if ans.Granted || !strings.Contains(ans.Reason, tc.reason) {
				t.Errorf("Reserve() = %+v, want refused with %q", ans, tc.reason)
			}
			if calls := c.lvm.Calls(1); len(calls) != 0 {
				t.Errorf("Reserve ran lvm: %q", calls)
			}
		})
	}
}

// TestReservationOfAnEarlierJobGrantsNothing (found by review): kvm2
// reserves live job A, whose Prepare then fails after migrate begin (kvm2
// keeps a fresh marker); within 2 s of A's start kvm1 begins job B, offline
// or live to a host whose reservation never arrives. kvm2's start during B
// must not get the downgrade: jobs are told apart by libvirt's own start
// (asyncStarted), and Downgrade reads the job again.
func TestReservationOfAnEarlierJobGrantsNothing(t *testing.T) {
	for _, offline := range []bool{true, false} {
		c := newTestCluster(t, 3)
		src := c.hosts[0]
		src.lv.run("vm1", uuid1, virt.StateRunning, virt.JobMigrationOut, "/dev/vg0/a")
		d := src.lv.Domain(uuid1)
		src.lv.Do(func() { d.Job.Elapsed = 300 * time.Millisecond })
		c.hold(1, "a", lvmlock.ModeEx)
		ctx := context.Background()
		if ans := src.helper.Reserve(ctx, "kvm2", reserveReq(uuid1)); !ans.Granted {
			t.Fatalf("job A reservation refused: %s", ans.Reason)
		}
		src.lv.SetJob(uuid1, virt.JobNone)
		c.advance(time.Second)
		src.lv.SetJob(uuid1, virt.JobMigrationOut)
		src.lv.Do(func() {
			d.Job.Elapsed = 200 * time.Millisecond // started 1.1 s after A
			d.Offline = offline
		})
		if ans := src.helper.Downgrade(ctx, "kvm2", req(uuid1, "a")); ans.Granted {
			t.Errorf("offline=%v: kvm2 got the downgrade of job B on job A's reservation", offline)
		}
		if diff := cmp.Diff(map[int]lvmlock.Mode{1: lvmlock.ModeEx}, c.lvm.Holders("vg0", "a")); diff != "" {
			t.Errorf("offline=%v: holders (-want +got):\n%s", offline, diff)
		}
	}
}
