package hook

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/state"
)

// kill writes host's kill record of vg, as `lvhook kill-vg` does.
func (c *cluster) kill(host int, vg string) {
	c.t.Helper()
	k := state.Killed{VG: vg, Started: time.Date(2026, 11, 22, 9, 58, 0, 0, time.UTC), Runs: 1, Verified: true}
	if err := c.hosts[host].State.SaveKilled(k); err != nil {
		c.t.Fatal(err)
	}
}

// A start with an LV of a VG killed here is refused before lvm runs, in
// one line naming the VG and the recovery; elsewhere it is not.
func TestKilledVGRefusesStart(t *testing.T) {
	c := newCluster(t)
	c.kill(1, "vg0")
	err := c.call(1, "block-three.xml", "prepare", "begin")
	wantErr(t, "start on host 1", err,
		"refusing to start vm1: VG vg0 lost its lease storage at 2026-11-22T09:58:00Z and was killed on this host; recover it first (`lvhook kill-vg --recover vg0`)")
	if calls := c.lvm.Calls(1); len(calls) != 0 {
		t.Errorf("ran %q", calls)
	}
	if recs, _ := c.hosts[1].State.All(state.PendingDir); len(recs) != 0 {
		t.Errorf("intent recorded for a refused start: %v", recs)
	}
	if err := c.call(1, "block-three.xml", "release", "end"); err != nil {
		t.Errorf("release after the refusal: %v", err)
	}
	if err := c.call(2, "block-three.xml", "prepare", "begin"); err != nil {
		t.Errorf("start on host 2, where vg0 is not killed: %v", err)
	}
	// A record lvhook cannot read counts as a kill.
	if err := os.MkdirAll(filepath.Join(c.hosts[2].State.Dir, state.KilledDir), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.hosts[2].State.Dir, state.KilledDir, "vg1.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	err = c.call(2, "shared-backing.xml", "prepare", "begin")
	wantErr(t, "start with vg1's record unreadable", err, "VG vg1 lost its lease storage at an unknown time (its kill record is unreadable)")
}

// The release of a domain whose LVs are all in a killed VG runs no lvm and
// does not wait for the host lock (a destroy by kill-vg waits for it),
// leaves no pending deactivation and drops the domain's record.
func TestKilledVGRelease(t *testing.T) {
	c := newCluster(t)
	if err := c.call(1, "block-three.xml", "prepare", "begin"); err != nil {
		t.Fatal(err)
	}
	c.kill(1, "vg0")
	c.lvm.ResetCalls()
	unlock, err := c.hosts[1].State.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	xml := readDomain(t, "block-three.xml")
	if err := c.hosts[1].Run(ctx, Call{Domain: "vm1", Op: "release", SubOp: "end", Extra: "destroyed"}, xml); err != nil {
		t.Fatalf("release with the host lock held elsewhere: %v", err)
	}
	if calls := c.lvm.Calls(1); len(calls) != 0 {
		t.Errorf("ran %q", calls)
	}
	for _, dir := range []string{state.DomainsDir, state.PendingDir} {
		if recs, _ := c.hosts[1].State.All(dir); len(recs) != 0 {
			t.Errorf("%s left: %v", dir, recs)
		}
	}
}

// runningThenKilled: vm-shared (shared-backing.xml: vg0 and vg1) runs on
// host 1, then vg1 is killed there.
func runningThenKilled(t *testing.T) *cluster {
	c := newCluster(t)
	if err := c.call(1, "shared-backing.xml", "prepare", "begin"); err != nil {
		t.Fatal(err)
	}
	c.kill(1, "vg1")
	c.lvm.ResetCalls()
	return c
}

// A domain with LVs in a killed VG and in a live one: the live VG's LVs
// are deactivated as usual, the killed one's left alone, nothing pending.
func TestKilledVGReleaseMixed(t *testing.T) {
	c := runningThenKilled(t)
	if err := c.call(1, "shared-backing.xml", "release", "end"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"lvchange -an --select vg_shared=1 -- vg0/cluster-fs vg0/reference"}, c.lvm.Calls(1)); diff != "" {
		t.Errorf("lvm calls (-want +got):\n%s", diff)
	}
	if recs, _ := c.hosts[1].State.All(state.PendingDir); len(recs) != 0 {
		t.Errorf("pending left: %v", recs)
	}
	if m := c.lvm.Mode(1, "vg1", "overlay"); m != lvmlock.ModeEx {
		t.Errorf("vg1/overlay: %v; kill-vg's error device stays until recovery", m)
	}
}

// Reconnect (libvirtd restarted) verifies the live VGs only.
func TestKilledVGReconnect(t *testing.T) {
	c := runningThenKilled(t)
	if err := c.call(1, "shared-backing.xml", "reconnect", "begin"); err != nil {
		t.Fatal(err)
	}
	for _, call := range c.lvm.Calls(1) {
		if strings.Contains(call, "vg1") {
			t.Errorf("ran %q on the killed VG", call)
		}
	}
}
