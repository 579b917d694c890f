package migration

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lvhook/lvhook/config"
	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/lvmlock/lvmfake"
	"github.com/lvhook/lvhook/peer"
	"github.com/lvhook/lvhook/state"
)

// fakeLibvirt is a host's libvirtd for unit tests: domains with a state, a
// job and an XML, and an event channel.
type fakeLibvirt struct {
	mu     sync.Mutex
	doms   map[string]*fakeDom
	events chan Event
	gone   chan struct{}
	calls  int
}

type fakeDom struct {
	name    string
	state   DomainState
	job     Job
	xml     string
	offline bool   // its migration job is an offline one
	started uint64 // its job's start, as libvirt's status file has it
}

// jobs numbers the fake's jobs: each one started is a new one.
var jobs atomic.Uint64

func newFakeLibvirt() *fakeLibvirt {
	return &fakeLibvirt{doms: map[string]*fakeDom{}, events: make(chan Event, 16), gone: make(chan struct{})}
}

// run makes a domain active here with the given job; the XML lists the
// block devices given.
func (f *fakeLibvirt) run(name, uuid string, state DomainState, job JobKind, devs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.doms[uuid] = &fakeDom{name: name, state: state, job: Job{Kind: job, Elapsed: 3 * time.Second}, xml: domainXML(name, uuid, devs...),
		started: jobs.Add(1)}
}

func (f *fakeLibvirt) stop(uuid string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.doms, uuid)
}

// jobFlags is what libvirt's status file tells of a domain's job.
func (f *fakeLibvirt) jobFlags(name string) (JobFlags, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, d := range f.doms {
		switch {
		case d.name != name:
		case d.job.Kind != JobMigrationOut:
			return JobFlags{Async: "none"}, nil
		case d.offline:
			return JobFlags{Async: asyncMigrationOut, Flags: migrateOffline | 0x8, Started: d.started}, nil // offline|persist_dest
		default:
			return JobFlags{Async: asyncMigrationOut, Flags: 0x1 | 0x2, Started: d.started}, nil // live|peer2peer
		}
	}
	return JobFlags{}, errors.New("libvirt's status file: no such file or directory")
}

func (f *fakeLibvirt) setJob(uuid string, job JobKind) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.doms[uuid].job.Kind = job
	f.doms[uuid].started = jobs.Add(1)
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

func (f *fakeLibvirt) get(uuid string) (*fakeDom, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	d := f.doms[uuid]
	if d == nil {
		return nil, fmt.Errorf("%w: %s", ErrNoDomain, uuid)
	}
	return d, nil
}

func (f *fakeLibvirt) ActiveDomains(context.Context) ([]Domain, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	var out []Domain
	for u, d := range f.doms {
		out = append(out, Domain{Name: d.name, UUID: u})
	}
	slices.SortFunc(out, func(a, b Domain) int { return strings.Compare(a.UUID, b.UUID) })
	return out, nil
}

func (f *fakeLibvirt) DomainState(_ context.Context, uuid string) (DomainState, error) {
	d, err := f.get(uuid)
	if err != nil {
		return StateOther, err
	}
	return d.state, nil
}

func (f *fakeLibvirt) DomainJob(_ context.Context, uuid string) (Job, error) {
	d, err := f.get(uuid)
	if err != nil {
		return Job{}, err
	}
	return d.job, nil
}

func (f *fakeLibvirt) DomainXML(_ context.Context, uuid string) ([]byte, error) {
	d, err := f.get(uuid)
	if err != nil {
		return nil, err
	}
	return []byte(d.xml), nil
}

func (f *fakeLibvirt) LifecycleEvents(context.Context) (<-chan Event, error) { return f.events, nil }
func (f *fakeLibvirt) Disconnected() <-chan struct{}                         { return f.gone }
func (f *fakeLibvirt) Close() error                                          { return nil }

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
		h.helper.JobFlags = h.lv.jobFlags
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
