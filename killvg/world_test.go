package killvg

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/lvhook/lvhook/config"
	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/lvmlock/lvmfake"
	"github.com/lvhook/lvhook/state"
	"github.com/lvhook/lvhook/virt"
	"github.com/lvhook/lvhook/virt/virttest"
)

// world is host 1 of two, losing vg0's lease storage. It runs, all ex:
//
//	vm1  vg0/vm1-root, vg0/vm1-data  started by lvhook (recorded)
//	vm2  vg0/vm2-root                started before lvhook (no record)
//	vm3  vg1/vm3-root                another VG: must live on
//
// and holds vg0/pool, a thin pool with its tpool layer, for no domain.
type world struct {
	t     *testing.T
	lvm   *lvmfake.Cluster
	lib   *virttest.Fake
	state *state.State
	// runner is host 1's, wrapped by tests that make commands hang.
	runner lvmlock.Runner
	parent string
}

const (
	uuid1 = "11111111-1111-4111-8111-111111111111"
	uuid2 = "22222222-2222-4222-8222-222222222222"
	uuid3 = "33333333-3333-4333-8333-333333333333"
)

func domXML(name, uuid string, disks ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "<domain type='kvm'><name>%s</name><uuid>%s</uuid><devices>", name, uuid)
	for i, d := range disks {
		fmt.Fprintf(&b, "<disk type='block' device='disk'><source dev='%s'/><target dev='vd%c'/></disk>", d, 'a'+i)
	}
	return b.String() + "</devices></domain>"
}

func newWorld(t *testing.T) *world {
	w := &world{t: t, lvm: lvmfake.NewCluster(2), lib: virttest.NewFake(), state: &state.State{Dir: t.TempDir()}, parent: "lvmlockctl"}
	w.lvm.AddVG("vg0", true, "vm1-root", "vm1-data", "vm2-root", "pool", "spare")
	w.lvm.AddVG("vg1", true, "vm3-root")
	w.lvm.AddLayer("vg0", "pool", "tpool")
	doms := []struct {
		name, uuid string
		lvs        []lvmlock.Ref
		recorded   bool
	}{
		{"vm1", uuid1, []lvmlock.Ref{{VG: "vg0", LV: "vm1-root"}, {VG: "vg0", LV: "vm1-data"}}, true},
		{"vm2", uuid2, []lvmlock.Ref{{VG: "vg0", LV: "vm2-root"}}, false},
		{"vm3", uuid3, []lvmlock.Ref{{VG: "vg1", LV: "vm3-root"}}, true},
	}
	for _, d := range doms {
		var paths []string
		rec := state.Record{Name: d.name, UUID: d.uuid}
		for _, r := range d.lvs {
			paths = append(paths, "/dev/"+r.VG+"/"+r.LV)
			rec.LVs = append(rec.LVs, state.RecordLV{VG: r.VG, LV: r.LV, Mode: lvmlock.ModeEx})
			w.lvm.Do(func(c *lvmfake.Cluster) {
				c.VGs[r.VG].LVs[r.LV].Holders[1] = lvmlock.ModeEx
				c.Open[1][r] = true
			})
		}
		w.lib.Run(d.name, d.uuid, virt.StateRunning, virt.JobNone, domXML(d.name, d.uuid, paths...))
		if d.recorded {
			if err := w.state.Save(state.DomainsDir, rec); err != nil {
				t.Fatal(err)
			}
		}
	}
	w.lvm.Do(func(c *lvmfake.Cluster) { c.VGs["vg0"].LVs["pool"].Holders[1] = lvmlock.ModeEx })
	// QEMU killed: its LVs close.
	w.lib.Stopped = func(uuid, _ string) {
		for _, d := range doms {
			if d.uuid == uuid {
				w.lvm.Do(func(c *lvmfake.Cluster) {
					for _, r := range d.lvs {
						delete(c.Open[1], r)
					}
				})
			}
		}
	}
	w.lvm.Kill(1, "vg0") // lvmlockctl --kill vg0 sent kill_vg
	w.runner = w.lvm.Host(1)
	return w
}

func (w *world) killer() *Killer {
	cfg := config.Default()
	cfg.StateDir = w.state.Dir
	return &Killer{
		Config: cfg,
		LVM:    &lvmlock.Client{Runner: w.runner, Log: zerolog.Nop()},
		State:  w.state,
		Connect: func(context.Context) (Libvirt, error) {
			return w.lib, nil
		},
		Log:     zerolog.Nop(),
		Parent:  func() string { return w.parent },
		Sanlock: lvmlock.Sanlock{Runner: w.runner},
	}
}

// calls lists host 1's commands that match prefix.
func (w *world) calls(prefix string) []string {
	var out []string
	for _, c := range w.lvm.Calls(1) {
		if strings.HasPrefix(c, prefix) {
			out = append(out, c)
		}
	}
	return out
}

// running lists the domains libvirt runs, by name.
func (w *world) running() []string {
	doms, _ := w.lib.ActiveDomains(context.Background())
	var out []string
	for _, d := range doms {
		out = append(out, d.Name)
	}
	slices.Sort(out)
	return out
}

// blockingRunner makes the commands block matches, until release is
// closed; it ignores ctx, as a command in D state ignores SIGKILL.
// entered gets a value when a blocked command starts.
type blockingRunner struct {
	next    lvmlock.Runner
	block   func(args []string) bool
	release chan struct{}
	entered chan struct{}
	once    sync.Once
}

func (r *blockingRunner) Run(ctx context.Context, name string, args ...string) ([]byte, []byte, error) {
	if r.block(append([]string{name}, args...)) {
		select {
		case r.entered <- struct{}{}:
		default:
		}
		<-r.release
	}
	return r.next.Run(ctx, name, args...)
}

func (r *blockingRunner) free() { r.once.Do(func() { close(r.release) }) }

func blockOn(next lvmlock.Runner, what string) *blockingRunner {
	return &blockingRunner{next: next, release: make(chan struct{}), entered: make(chan struct{}, 1),
		block: func(args []string) bool { return strings.Join(args, " ") == what }}
}
