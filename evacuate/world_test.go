package evacuate

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lvhook/lvhook/config"
	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/lvmlock/lvmfake"
	"github.com/lvhook/lvhook/peer"
	"github.com/lvhook/lvhook/peer/peertest"
	"github.com/lvhook/lvhook/state"
	"github.com/lvhook/lvhook/virt"
	"github.com/lvhook/lvhook/virt/virttest"
)

// world is host1 evacuating to host2 and host3: host1's libvirtd
// (virttest.Fake) and lvm (host 1 of an lvmfake cluster, where host N is
// hostN), the peers' capacity answers, and a clock the waits advance.
type world struct {
	t   *testing.T
	lv  *virttest.Fake
	lvm *lvmfake.Cluster
	e   *Evacuator
	out peertest.SyncBuffer

	mu       sync.Mutex
	now      time.Time
	slept    time.Duration
	capacity map[string]peer.CapacityAnswer
	unreach  map[string]error
	// onSleep, when set, runs at each pause of the evacuation's waits.
	onSleep func()
	// drainingSeen: host1 was marked evacuating when a domain stopped.
	drainingSeen bool
	doms         int
}

func newWorld(t *testing.T) *world {
	w := &world{t: t, lv: virttest.NewFake(), lvm: lvmfake.NewCluster(3), now: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC),
		capacity: map[string]peer.CapacityAnswer{}, unreach: map[string]error{}}
	w.lvm.AddVG("vg0", true)
	cfg := config.Default()
	cfg.StateDir = filepath.Join(t.TempDir(), "run")
	cfg.Daemon.HostName = "host1"
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("host%d", i)
		cfg.Daemon.Peers = append(cfg.Daemon.Peers, config.Peer{Name: name, Address: name, HostID: i})
		w.capacity[name] = answer(name, 64)
	}
	cfg.Daemon.Peers[2].MigrateURI = "tcp://10.0.0.3"
	st := &state.State{Dir: cfg.StateDir, Now: w.clock}
	w.e = &Evacuator{Config: cfg, Host: "host1", Libvirt: w.lv, LVM: &lvmlock.Client{Runner: w.lvm.Host(1), Log: zerolog.Nop()},
		State: st, Peers: w, Log: zerolog.Nop(), Progress: &w.out, Now: w.clock, Sleep: w.sleep, Reserve: time.Second, AbortBound: time.Second}
	w.lv.Stopped = w.stopped
	return w
}

// answer is a peer's capacity: libvirt up, gibs GiB free.
func answer(name string, gibs float64) peer.CapacityAnswer {
	return peer.CapacityAnswer{Host: name, LibvirtUp: true, FreeMemoryBytes: int64(gibs * gib)}
}

func (w *world) clock() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.now
}

// sleep advances the clock at once (the waits' bounds are on this clock).
func (w *world) sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	w.mu.Lock()
	w.now = w.now.Add(d)
	w.slept += d
	f := w.onSleep
	w.mu.Unlock()
	if f != nil {
		f()
	}
	return nil
}

// AskCapacity is the peers' lock helpers.
func (w *world) AskCapacity(ctx context.Context, p config.Peer, _ peer.CapacityRequest) (peer.CapacityAnswer, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.unreach[p.Name]; err != nil {
		return peer.CapacityAnswer{}, err
	}
	return w.capacity[p.Name], nil
}

// run starts a domain on host1 with mem GiB, one LV per disk (vg0/NAME-0,
// ...) held ex, and lvhook metadata attrs (as written in the element).
func (w *world) run(name string, mem float64, attrs string, disks int) *virttest.FakeDomain {
	w.t.Helper()
	w.doms++
	uuid := fmt.Sprintf("00000000-0000-4000-8000-%012d", w.doms)
	var b strings.Builder
	fmt.Fprintf(&b, "<domain type='kvm'><name>%s</name><uuid>%s</uuid>", name, uuid)
	if attrs != "" {
		fmt.Fprintf(&b, `<metadata><lvhook:domain xmlns:lvhook="https://lvhook.dev/xmlns/domain/1" %s/></metadata>`, attrs)
	}
	b.WriteString("<devices>")
	for i := range disks {
		lv := fmt.Sprintf("%s-%d", name, i)
		w.lvm.Do(func(c *lvmfake.Cluster) {
			c.VGs["vg0"].LVs[lv] = &lvmfake.LV{UUID: "uuid-" + lv, Segtype: "linear", Attr: "-wi-a-----", Holders: map[int]lvmlock.Mode{1: lvmlock.ModeEx}}
		})
		fmt.Fprintf(&b, "<disk type='block' device='disk'><source dev='/dev/vg0/%s'/><target dev='vd%c'/></disk>", lv, 'a'+i)
	}
	b.WriteString("</devices></domain>")
	d := w.lv.Run(name, uuid, virt.StateRunning, virt.JobNone, b.String())
	w.lv.Do(func() { d.Memory = uint64(mem * gib) })
	return d
}

// hold sets host's lock of vg0/lv.
func (w *world) hold(host int, lv string, m lvmlock.Mode) {
	w.lvm.Do(func(c *lvmfake.Cluster) {
		if m == lvmlock.ModeNone {
			delete(c.VGs["vg0"].LVs[lv].Holders, host)
		} else {
			c.VGs["vg0"].LVs[lv].Holders[host] = m
		}
	})
}

// stopped is libvirt's hook at a stop on host1 (release end): the
// domain's LVs are no longer held here; a migrated domain's are the
// destination's, ex.
func (w *world) stopped(uuid, reason string) {
	if on, _ := w.e.State.Evacuating(); on {
		w.mu.Lock()
		w.drainingSeen = true
		w.mu.Unlock()
	}
	d := w.lv.Domain(uuid)
	dest := 0
	if reason == "migrated" {
		acts := w.lv.Actions()
		f := strings.Fields(acts[len(acts)-1])
		u, _ := url.Parse(f[2])
		fmt.Sscanf(u.Host, "host%d", &dest)
	}
	w.lvm.Do(func(c *lvmfake.Cluster) {
		for name, lv := range c.VGs["vg0"].LVs {
			if strings.HasPrefix(name, d.Name+"-") {
				delete(lv.Holders, 1)
				if dest > 0 {
					lv.Holders[dest] = lvmlock.ModeEx
				}
			}
		}
	})
}

// evacuate runs the evacuation and checks what must hold after any: no
// domain still running on host1 holds an LV sh there, and the evacuating
// mark is gone (unless at shutdown).
func (w *world) evacuate(opts Options) *Report {
	w.t.Helper()
	rep, err := w.e.Run(context.Background(), opts)
	if err != nil {
		w.t.Fatalf("Run: %v\n%s", err, w.out.String())
	}
	w.noSharedLeft()
	if on, err := w.e.State.Evacuating(); on != opts.AtShutdown || err != nil {
		w.t.Errorf("after the run, marked evacuating = %v (%v), want %v", on, err, opts.AtShutdown)
	}
	return rep
}

// noSharedLeft fails the test when a domain running on host1 holds one of
// its LVs sh there.
func (w *world) noSharedLeft() {
	w.t.Helper()
	listed, _ := w.lv.Domains(context.Background())
	for _, l := range listed {
		if !l.Active() {
			continue
		}
		w.lvm.Do(func(c *lvmfake.Cluster) {
			for name, lv := range c.VGs["vg0"].LVs {
				if strings.HasPrefix(name, l.Name+"-") && lv.Holders[1] == lvmlock.ModeSh {
					w.t.Errorf("%s runs on host1 with vg0/%s sh", l.Name, name)
				}
			}
		})
	}
}

// results renders the report's domains as "name plan target actions result".
func results(rep *Report) []string {
	var out []string
	for _, d := range rep.Domains {
		out = append(out, strings.TrimSpace(fmt.Sprintf("%s %s %s [%s] %s", d.Name, d.Plan, d.Target, strings.Join(d.Actions, ","), d.Result)))
	}
	return out
}

// failingList is a libvirtd whose list fails: nothing can be evacuated.
type failingList struct{ *virttest.Fake }

func (failingList) Domains(context.Context) ([]virt.Listed, error) {
	return nil, errors.New("list libvirt domains: dial unix /var/run/libvirt/libvirt-sock: connect: no such file or directory")
}
