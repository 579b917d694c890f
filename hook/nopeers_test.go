package hook

import (
	"testing"

	"github.com/lvhook/lvhook/lvmlock"
)

// TestNoPeersIncomingPrepareIsAStart: without peers a marker proves nothing.
// Offline migrations of vm1 to two hosts, then a start on each: the first
// takes ex, the second is refused (found by review: both got sh).
func TestNoPeersIncomingPrepareIsAStart(t *testing.T) {
	c := newCluster(t)
	for _, h := range []int{1, 2} {
		if err := c.call(h, "block-three.xml", "migrate", "begin"); err != nil {
			t.Fatalf("host %d: migrate begin: %v", h, err)
		}
	}
	if err := c.call(1, "block-three.xml", "prepare", "begin"); err != nil {
		t.Fatalf("host 1: start: %v", err)
	}
	c.wantModes("first start", "vg0", held(1, lvmlock.ModeEx), vm1LVs...)
	err := c.call(2, "block-three.xml", "prepare", "begin")
	wantErr(t, "second start", err, "refusing to start vm1")
	c.wantModes("second start refused", "vg0", held(1, lvmlock.ModeEx), vm1LVs...)
}
