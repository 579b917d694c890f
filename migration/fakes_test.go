package migration

import (
	"context"
	"fmt"
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
	"github.com/lvhook/lvhook/state"
	"github.com/lvhook/lvhook/virt"
	"github.com/lvhook/lvhook/virt/virttest"
)

// fakeLibvirt is a host's libvirtd for unit tests (virttest.Fake), with
// domains described by their block devices.
type fakeLibvirt struct{ *virttest.Fake }

func newFakeLibvirt() *fakeLibvirt { return &fakeLibvirt{virttest.NewFake()} }

// run makes a domain active here with the given job; the XML lists the
// block devices given.
func (f *fakeLibvirt) run(name, uuid string, state virt.DomainState, job virt.JobKind, devs ...string) {
	f.Run(name, uuid, state, job, domainXML(name, uuid, devs...))
}

func domainXML(name, uuid string, devs ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "<domain type='kvm'><name>%s</name><uuid>%s</uuid><devices>", name, uuid)
	for i, d := range devs {
		extra := ""
		if p, ok := strings.CutPrefix(d, "shareable:"); ok {
			d, extra = p, "<shareable/>"
		}
		fmt.Fprintf(&b, "<disk type='block' device='disk'><source dev='%s'/><target dev='vd%c'/>%s</disk>", d, 'a'+i, extra)
	}
	b.WriteString("</devices></domain>")
	return b.String()
}

// testHost is one host of a unit test: its libvirt, state and helper, on a
// shared fake lvm cluster.
type testHost struct {
	id     int
	name   string
	lv     *fakeLibvirt
	state  *state.State
	helper *Helper
}

// testCluster is n hosts on one fake lvmlockd cluster with a fake clock.
type testCluster struct {
	t     *testing.T
	lvm   *lvmfake.Cluster
	hosts []*testHost
	now   time.Time
	mu    sync.Mutex
}

const (
	uuid1 = "11111111-2222-4333-8444-555555555551"
	uuid2 = "11111111-2222-4333-8444-555555555552"
)

func newTestCluster(t *testing.T, n int) *testCluster {
	c := &testCluster{t: t, lvm: lvmfake.NewCluster(n), now: time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)}
	c.lvm.AddVG("vg0", true, "a", "b", "iso", "other")
	for id := 1; id <= n; id++ {
		h := &testHost{id: id, name: fmt.Sprintf("kvm%d", id), lv: newFakeLibvirt()}
		cfg := config.Default()
		cfg.StateDir = filepath.Join(t.TempDir(), h.name)
		cfg.Daemon.HostName = h.name
		h.state = &state.State{Dir: cfg.StateDir, Now: c.clock}
		h.helper = NewHelper(cfg, h.name, &lvmlock.Client{Runner: c.lvm.Host(id), Log: zerolog.Nop()}, h.state, zerolog.Nop())
		h.helper.Now = c.clock
		h.helper.JobFlags = h.lv.JobFlags
		h.helper.Connected(context.Background(), h.lv)
		c.hosts = append(c.hosts, h)
	}
	return c
}

func (c *testCluster) clock() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testCluster) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// hold sets the lock a host holds on vg0/lv (and marks it open when QEMU
// uses it).
func (c *testCluster) hold(host int, lv string, m lvmlock.Mode) {
	c.lvm.Do(func(cl *lvmfake.Cluster) {
		if m == lvmlock.ModeNone {
			delete(cl.VGs["vg0"].LVs[lv].Holders, host)
		} else {
			cl.VGs["vg0"].LVs[lv].Holders[host] = m
		}
	})
}

// record writes lvhook's record of a domain on a host, as a prepare does.
func (c *testCluster) record(host int, name, uuid string, incoming bool, lvs ...string) {
	c.t.Helper()
	rec := state.Record{Name: name, UUID: uuid, Incoming: incoming}
	for _, lv := range lvs {
		rec.LVs = append(rec.LVs, state.RecordLV{VG: "vg0", LV: lv, Mode: lvmlock.ModeEx})
	}
	if err := c.hosts[host-1].state.Save(state.DomainsDir, rec); err != nil {
		c.t.Fatal(err)
	}
}

func (c *testCluster) holders(lvs ...string) map[string]map[int]lvmlock.Mode {
	out := map[string]map[int]lvmlock.Mode{}
	for _, lv := range lvs {
		out[lv] = c.lvm.Holders("vg0", lv)
	}
	return out
}

func req(uuid string, lvs ...string) peer.Request {
	r := peer.Request{Domain: "vm1", UUID: uuid, TimeoutMS: 10000}
	for _, lv := range lvs {
		r.LVs = append(r.LVs, peer.LVRef{VG: "vg0", LV: lv})
	}
	return r
}
