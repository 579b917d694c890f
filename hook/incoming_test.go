package hook

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"

	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/lvmlock/lvmfake"
	"github.com/lvhook/lvhook/state"
)

// boundRunner passes commands on to inner, recording how long each one had
// before its deadline; with hang, a sanlock command waits for its end.
type boundRunner struct {
	inner lvmlock.Runner
	hang  bool
	mu    sync.Mutex
	left  []time.Duration // -1: no deadline
}

func (b *boundRunner) Run(ctx context.Context, name string, args ...string) ([]byte, []byte, error) {
	left := time.Duration(-1)
	if dl, ok := ctx.Deadline(); ok {
		left = time.Until(dl)
	}
	b.mu.Lock()
	b.left = append(b.left, left)
	b.mu.Unlock()
	if b.hang && name == "sanlock" {
		<-ctx.Done()
		return nil, nil, ctx.Err()
	}
	return b.inner.Run(ctx, name, args...)
}

// reads reports whether every call is a read (lvs, sanlock).
func reads(calls []string) bool {
	for _, c := range calls {
		if !strings.HasPrefix(c, "lvs ") && !strings.HasPrefix(c, "sanlock ") {
			return false
		}
	}
	return true
}

// TestIncomingAsksLeaseHolderFirst: the destination's migrate begin reads,
// from sanlock, which host_id holds the domain's first exclusive LV and
// gives it to the reservation, which asks that peer first. The read is
// bounded and never fails migrate begin: anything wrong gives 0 (unknown),
// and the reservation then asks every peer.
func TestIncomingAsksLeaseHolderFirst(t *testing.T) {
	vm1 := "6f1c5b7e-2a1d-4c53-9a43-2b8f0d1e7c11"
	t.Run("the source holds the LVs ex: its host_id is given, only reads run", func(t *testing.T) {
		c := newCluster(t)
		if err := c.call(1, "block-three.xml", "prepare", "begin"); err != nil {
			t.Fatal(err)
		}
		var logs bytes.Buffer
		ho := &fakeHandover{source: "kvm1"}
		c.hosts[2].Handover = ho
		c.hosts[2].Sanlock = &lvmlock.Sanlock{Runner: c.lvm.Host(2)}
		c.hosts[2].Log = zerolog.New(&logs).Level(zerolog.DebugLevel)
		if err := c.call(2, "block-three.xml", "migrate", "begin"); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]int{1}, ho.holders); diff != "" {
			t.Errorf("lease holders given (-want +got):\n%s", diff)
		}
		if calls := c.lvm.Calls(2); !reads(calls) || len(calls) != 3 {
			t.Errorf("migrate begin ran %q; want one lvs and two sanlock reads", calls)
		}
		if !strings.Contains(logs.String(), `"holder_host_id":1`) || !strings.Contains(logs.String(), `"lv":"vg0/vm1-root"`) {
			t.Errorf("the lookup is not logged with the LV and the host_id found:\n%s", logs.String())
		}
		c.wantModes("after migrate begin", "vg0", held(1, lvmlock.ModeEx), vm1LVs...)
		if m, ok, err := c.hosts[2].State.TakeIncoming(vm1, time.Minute); err != nil || !ok || m.Source != "kvm1" {
			t.Errorf("marker = %+v, %v, %v; want one naming kvm1", m, ok, err)
		}
	})
	t.Run("nobody holds the LVs (an offline migration): unknown", func(t *testing.T) {
		c := newCluster(t)
		ho := &fakeHandover{}
		c.hosts[2].Handover = ho
		c.hosts[2].Sanlock = &lvmlock.Sanlock{Runner: c.lvm.Host(2)}
		if err := c.call(2, "block-three.xml", "migrate", "begin"); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]int{0}, ho.holders); diff != "" {
			t.Errorf("lease holders given (-want +got):\n%s", diff)
		}
	})
	t.Run("no sanlock: unknown, nothing run", func(t *testing.T) {
		c := newCluster(t)
		if err := c.call(1, "block-three.xml", "prepare", "begin"); err != nil {
			t.Fatal(err)
		}
		ho := &fakeHandover{source: "kvm1"}
		c.hosts[2].Handover = ho
		if err := c.call(2, "block-three.xml", "migrate", "begin"); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]int{0}, ho.holders); diff != "" {
			t.Errorf("lease holders given (-want +got):\n%s", diff)
		}
		if calls := c.lvm.Calls(2); len(calls) != 0 {
			t.Errorf("migrate begin ran %q", calls)
		}
	})
	t.Run("no peers: no lookup", func(t *testing.T) {
		c := newCluster(t)
		c.hosts[2].Sanlock = &lvmlock.Sanlock{Runner: c.lvm.Host(2)}
		if err := c.call(2, "block-three.xml", "migrate", "begin"); err != nil {
			t.Fatal(err)
		}
		if calls := c.lvm.Calls(2); len(calls) != 0 {
			t.Errorf("migrate begin without peers ran %q", calls)
		}
	})
	for _, fault := range []struct{ cmd, stderr string }{
		{"sanlock", "sanlock daemon is not running\n"},
		{"lvs", "  Volume group \"vg0\" not found\n"},
	} {
		t.Run(fault.cmd+" fails: unknown, migrate begin goes on", func(t *testing.T) {
			c := newCluster(t)
			if err := c.call(1, "block-three.xml", "prepare", "begin"); err != nil {
				t.Fatal(err)
			}
			c.lvm.Intercept = func(_ int, args []string) (string, string, error, bool) {
				if args[0] == fault.cmd {
					return "", fault.stderr, lvmfake.ExitError{Code: 5}, true
				}
				return "", "", nil, false
			}
			ho := &fakeHandover{source: "kvm1"}
			c.hosts[2].Handover = ho
			c.hosts[2].Sanlock = &lvmlock.Sanlock{Runner: c.lvm.Host(2)}
			if err := c.call(2, "block-three.xml", "migrate", "begin"); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]int{0}, ho.holders); diff != "" {
				t.Errorf("lease holders given (-want +got):\n%s", diff)
			}
			if m, ok, _ := c.hosts[2].State.TakeIncoming(vm1, time.Minute); !ok || m.Source != "kvm1" {
				t.Errorf("marker = %+v, %v; want one naming kvm1", m, ok)
			}
		})
	}
	t.Run("every read is bounded", func(t *testing.T) {
		c := newCluster(t)
		if err := c.call(1, "block-three.xml", "prepare", "begin"); err != nil {
			t.Fatal(err)
		}
		lvm := &boundRunner{inner: c.lvm.Host(2)}
		sl := &boundRunner{inner: c.lvm.Host(2)}
		c.hosts[2].LVM = &lvmlock.Client{Runner: lvm, Log: zerolog.Nop()}
		c.hosts[2].Sanlock = &lvmlock.Sanlock{Runner: sl}
		ho := &fakeHandover{source: "kvm1"}
		c.hosts[2].Handover = ho
		if err := c.call(2, "block-three.xml", "migrate", "begin"); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]int{1}, ho.holders); diff != "" {
			t.Errorf("lease holders given (-want +got):\n%s", diff)
		}
		for _, left := range append(lvm.left, sl.left...) {
			if left < 0 || left > incomingHolderTimeout {
				t.Errorf("a read had %s before its deadline; want at most %s", left, incomingHolderTimeout)
			}
		}
		if len(lvm.left) != 1 || len(sl.left) != 2 {
			t.Errorf("%d lvm and %d sanlock reads, want 1 and 2", len(lvm.left), len(sl.left))
		}
	})
	t.Run("sanlock hangs: unknown after the bound, migrate begin goes on", func(t *testing.T) {
		c := newCluster(t)
		if err := c.call(1, "block-three.xml", "prepare", "begin"); err != nil {
			t.Fatal(err)
		}
		c.hosts[2].Sanlock = &lvmlock.Sanlock{Runner: &boundRunner{inner: c.lvm.Host(2), hang: true}}
		ho := &fakeHandover{source: "kvm1"}
		c.hosts[2].Handover = ho
		start := time.Now()
		if err := c.call(2, "block-three.xml", "migrate", "begin"); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took > incomingHolderTimeout+time.Second {
			t.Errorf("migrate begin took %s with sanlock hung; the lookup is bounded by %s", took, incomingHolderTimeout)
		}
		if diff := cmp.Diff([]int{0}, ho.holders); diff != "" {
			t.Errorf("lease holders given (-want +got):\n%s", diff)
		}
	})
	t.Run("the hook's own deadline bounds the lookup too", func(t *testing.T) {
		c := newCluster(t)
		if err := c.call(1, "block-three.xml", "prepare", "begin"); err != nil {
			t.Fatal(err)
		}
		c.hosts[2].Sanlock = &lvmlock.Sanlock{Runner: &boundRunner{inner: c.lvm.Host(2), hang: true}}
		c.hosts[2].Handover = &fakeHandover{source: "kvm1"}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := c.hosts[2].Run(ctx, Call{Domain: "vm1", Op: "migrate", SubOp: "begin", Extra: "-"}, readDomain(t, "block-three.xml"))
		if err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("migrate begin took %s, past the hook's 200ms deadline", took)
		}
	})
	t.Run("the first exclusive disk is looked up, not a shareable one", func(t *testing.T) {
		c := newCluster(t)
		c.lvm.Do(func(l *lvmfake.Cluster) {
			l.VGs["vg0"].LVs["vm1-root"].Holders[1] = lvmlock.ModeEx
			l.VGs["vg0"].LVs["cluster-fs"].Holders[2] = lvmlock.ModeSh
		})
		ho := &fakeHandover{source: "kvm1"}
		c.hosts[2].Handover = ho
		c.hosts[2].Sanlock = &lvmlock.Sanlock{Runner: c.lvm.Host(2)}
		xml := []byte(`<domain><name>vm1</name><uuid>` + vm1 + `</uuid><devices>
<disk type='block'><source dev='/dev/vg0/cluster-fs'/><target dev='vda'/><shareable/></disk>
<disk type='block'><source dev='/dev/vg0/vm1-root'/><target dev='vdb'/></disk></devices></domain>`)
		if err := c.hosts[2].Run(context.Background(), Call{Domain: "vm1", Op: "migrate", SubOp: "begin"}, xml); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]int{1}, ho.holders); diff != "" {
			t.Errorf("lease holders given (-want +got):\n%s", diff)
		}
	})
	t.Run("only shareable disks: unknown, nothing read", func(t *testing.T) {
		c := newCluster(t)
		c.lvm.Do(func(l *lvmfake.Cluster) { l.VGs["vg0"].LVs["cluster-fs"].Holders[1] = lvmlock.ModeSh })
		ho := &fakeHandover{}
		c.hosts[2].Handover = ho
		c.hosts[2].Sanlock = &lvmlock.Sanlock{Runner: c.lvm.Host(2)}
		xml := []byte(`<domain><name>vm1</name><uuid>` + vm1 + `</uuid><devices>
<disk type='block'><source dev='/dev/vg0/cluster-fs'/><target dev='vda'/><shareable/></disk></devices></domain>`)
		if err := c.hosts[2].Run(context.Background(), Call{Domain: "vm1", Op: "migrate", SubOp: "begin"}, xml); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]int{0}, ho.holders); diff != "" {
			t.Errorf("lease holders given (-want +got):\n%s", diff)
		}
		if calls := c.lvm.Calls(2); len(calls) != 0 {
			t.Errorf("migrate begin ran %q", calls)
		}
	})
}

// lockProbe is a sanlock runner that, at each call, tries the host lock:
// busy means the hook read sanlock while holding it.
type lockProbe struct {
	inner lvmlock.Runner
	state *state.State
	mu    sync.Mutex
	held  []bool
}

func (p *lockProbe) Run(ctx context.Context, name string, args ...string) ([]byte, []byte, error) {
	tctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	unlock, err := p.state.Lock(tctx)
	if err == nil {
		unlock()
	}
	p.mu.Lock()
	p.held = append(p.held, err != nil)
	p.mu.Unlock()
	return p.inner.Run(ctx, name, args...)
}

// TestIncomingHolderOutsideHostLock: migrate begin looks the lease holder up
// before it takes the host lock, which other hooks and the lock helper wait
// for meanwhile.
func TestIncomingHolderOutsideHostLock(t *testing.T) {
	c := newCluster(t)
	if err := c.call(1, "block-three.xml", "prepare", "begin"); err != nil {
		t.Fatal(err)
	}
	ho := &fakeHandover{source: "kvm1"}
	probe := &lockProbe{inner: c.lvm.Host(2), state: c.hosts[2].State}
	c.hosts[2].Handover = ho
	c.hosts[2].Sanlock = &lvmlock.Sanlock{Runner: probe}
	if err := c.call(2, "block-three.xml", "migrate", "begin"); err != nil {
		t.Fatal(err)
	}
	if len(probe.held) == 0 || slices.Contains(probe.held, true) {
		t.Errorf("sanlock read with the host lock held: %v (one per read; want all false)", probe.held)
	}
	if diff := cmp.Diff([]int{1}, ho.holders); diff != "" {
		t.Errorf("lease holders given (-want +got):\n%s", diff)
	}
}
