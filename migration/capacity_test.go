package migration

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lvhook/lvhook/peer"
	"github.com/lvhook/lvhook/state"
	"github.com/lvhook/lvhook/virt"
)

// TestCapacity: the lock helper tells a peer's evacuation its host's free
// memory and running domains from libvirt, and that it is draining while
// this host evacuates itself; without libvirt it says so and libvirt_up is
// false.
func TestCapacity(t *testing.T) {
	c := newTestCluster(t, 1)
	h := c.hosts[0]
	h.lv.FreeMemory = 12 << 30
	h.lv.run("vm1", uuid1, virt.StateRunning, virt.JobNone, "/dev/vg0/a")
	h.lv.run("vm2", uuid2, virt.StateShutoff, virt.JobNone, "/dev/vg0/b")
	ctx := context.Background()
	want := peer.CapacityAnswer{Host: "kvm1", LibvirtUp: true, FreeMemoryBytes: 12 << 30, ActiveDomains: 1}
	if diff := cmp.Diff(want, h.helper.Capacity(ctx)); diff != "" {
		t.Errorf("Capacity (-want +got):\n%s", diff)
	}

	if err := h.state.MarkEvacuating(state.Evacuation{}); err != nil {
		t.Fatal(err)
	}
	want.Draining = true
	if diff := cmp.Diff(want, h.helper.Capacity(ctx)); diff != "" {
		t.Errorf("Capacity while evacuating (-want +got):\n%s", diff)
	}
	if err := h.state.ClearEvacuating(); err != nil {
		t.Fatal(err)
	}

	h.helper.Disconnected()
	want = peer.CapacityAnswer{Host: "kvm1", Error: "the lock helper on kvm1 is not connected to libvirt"}
	if diff := cmp.Diff(want, h.helper.Capacity(ctx)); diff != "" {
		t.Errorf("Capacity without libvirt (-want +got):\n%s", diff)
	}
}

// TestCapacityUnreadableMarker: a state directory lvhook cannot read may
// hide the marker: the host says draining rather than take domains.
func TestCapacityUnreadableMarker(t *testing.T) {
	c := newTestCluster(t, 1)
	h := c.hosts[0]
	// A file where the directory should be: every look inside fails
	// (ENOTDIR), for root too.
	if err := os.RemoveAll(h.state.Dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(h.state.Dir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ans := h.helper.Capacity(context.Background())
	if !ans.Draining || !strings.HasPrefix(ans.Error, "cannot tell whether kvm1 is evacuating: ") || !ans.LibvirtUp {
		t.Errorf("Capacity over an unreadable state directory = %+v, want draining with the reason", ans)
	}
}
