package migration

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"

	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/state"
	"github.com/lvhook/lvhook/virt"
)

// A VG killed here (kill-vg's record) is left alone pass after pass: no
// conversion, no deactivation retry, no lvm at all, no problem written;
// the kill is logged once. Once recovered, the helper repairs again.
func TestHelperLeavesKilledVGAlone(t *testing.T) {
	c := newTestCluster(t, 2)
	h := c.hosts[0]
	var logs bytes.Buffer
	h.helper.Log = zerolog.New(&logs)
	h.lv.run("vm1", uuid1, virt.StateRunning, virt.JobNone, "/dev/vg0/a")
	c.record(1, "vm1", uuid1, false, "a")
	c.hold(1, "a", lvmlock.ModeSh) // ex due
	c.hold(1, "b", lvmlock.ModeEx) // a failed release's
	if err := h.state.Save(state.PendingDir, state.Record{Name: "vm2", UUID: uuid2, LVs: []state.RecordLV{{VG: "vg0", LV: "b"}}}); err != nil {
		t.Fatal(err)
	}
	if err := h.state.SaveKilled(state.Killed{VG: "vg0", Started: c.clock().Add(-time.Minute), Verified: true}); err != nil {
		t.Fatal(err)
	}
	c.lvm.ResetCalls()
	ctx := context.Background()
	for range 2 {
		h.helper.ReconcileAll(ctx)
		c.advance(time.Minute)
	}
	if calls := c.lvm.Calls(1); len(calls) != 0 {
		t.Errorf("ran %q on a killed VG", calls)
	}
	if diff := cmp.Diff(map[string]map[int]lvmlock.Mode{"a": {1: "sh"}, "b": {1: "ex"}}, c.holders("a", "b")); diff != "" {
		t.Errorf("locks changed (-want +got):\n%s", diff)
	}
	if p, ok, _ := h.state.Load(state.PendingDir, uuid2); !ok || len(p.LVs) != 1 {
		t.Errorf("pending record of vm2: %+v, %v; want it untouched", p, ok)
	}
	if got := problemsOf(t, h); len(got) != 0 {
		t.Errorf("problems written: %v", got)
	}
	if n := strings.Count(logs.String(), "VG killed on this host"); n != 1 {
		t.Errorf("kill logged %d times, want once:\n%s", n, logs.String())
	}

	if err := h.state.RemoveKilled("vg0"); err != nil { // kill-vg --recover
		t.Fatal(err)
	}
	h.helper.ReconcileAll(ctx)
	if diff := cmp.Diff(map[string]map[int]lvmlock.Mode{"a": {1: "ex"}, "b": {}}, c.holders("a", "b")); diff != "" {
		t.Errorf("after the recovery (-want +got):\n%s", diff)
	}
	if !strings.Contains(logs.String(), "VG recovered") {
		t.Error("recovery not logged")
	}
}

// A downgrade of a killed VG's LVs is refused before lvm runs.
func TestDowngradeRefusedForKilledVG(t *testing.T) {
	c := newTestCluster(t, 2)
	src := c.hosts[0]
	src.lv.run("vm1", uuid1, virt.StateRunning, virt.JobMigrationOut, "/dev/vg0/a")
	c.record(1, "vm1", uuid1, false, "a")
	c.hold(1, "a", lvmlock.ModeEx)
	if err := src.state.SaveKilled(state.Killed{VG: "vg0", Started: c.clock()}); err != nil {
		t.Fatal(err)
	}
	c.lvm.ResetCalls()
	ans := src.helper.Downgrade(context.Background(), "kvm2", req(uuid1, "a"))
	if ans.Granted || !strings.Contains(ans.Reason, "VG vg0 was killed on kvm1 (lease storage lost)") {
		t.Errorf("answer %+v: want a refusal naming the kill", ans)
	}
	if calls := c.lvm.Calls(1); len(calls) != 0 {
		t.Errorf("ran %q", calls)
	}
}
