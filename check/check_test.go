package check

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/rs/zerolog"

	"github.com/lvhook/lvhook/domxml"
	"github.com/lvhook/lvhook/internal/testutil"
	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/lvmlock/lvmfake"
	"github.com/lvhook/lvhook/peer"
	"github.com/lvhook/lvhook/state"
	"github.com/lvhook/lvhook/virt"
)

const poolDir = "../testdata/pools"

var update = flag.Bool("update", false, "rewrite the golden files under testdata/check")

// fakeLibvirt is one host's libvirtd as check sees it, counting calls.
type fakeLibvirt struct {
	mu    sync.Mutex
	doms  []virt.Listed
	xml   map[string][]byte
	jobs  map[string]virt.Job
	calls map[string]int
	// listErr fails Domains.
	listErr error
	// autostart lists the UUIDs of the domains set to autostart.
	autostart map[string]bool
}

func newFakeLibvirt() *fakeLibvirt {
	return &fakeLibvirt{xml: map[string][]byte{}, jobs: map[string]virt.Job{}, calls: map[string]int{}}
}

func (f *fakeLibvirt) Domains(context.Context) ([]virt.Listed, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["list"]++
	if f.listErr != nil {
		return nil, f.listErr
	}
	return append([]virt.Listed(nil), f.doms...), nil
}

func (f *fakeLibvirt) DomainXML(_ context.Context, uuid string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["xml"]++
	x, ok := f.xml[uuid]
	if !ok {
		return nil, fmt.Errorf("Domain not found: no domain with matching uuid '%s'", uuid)
	}
	return x, nil
}

func (f *fakeLibvirt) DomainAutostart(_ context.Context, uuid string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["autostart"]++
	return f.autostart[uuid], nil
}

func (f *fakeLibvirt) DomainJob(_ context.Context, uuid string) (virt.Job, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["job"]++
	i := slices.IndexFunc(f.doms, func(d virt.Listed) bool { return d.UUID == uuid })
	if i < 0 || !f.doms[i].Active() {
		return virt.Job{}, errors.New("Requested operation is not valid: domain is not running")
	}
	return f.jobs[uuid], nil
}

// peersFromCluster answers for the other hosts of the fake cluster, as
// their lock helpers would.
type peersFromCluster struct {
	lvm   *lvmfake.Cluster
	self  int
	names map[int]string
	asked [][]lvmlock.Ref
}

func (p *peersFromCluster) Holders(_ context.Context, refs []lvmlock.Ref) (map[lvmlock.Ref][]peer.Holder, error) {
	p.asked = append(p.asked, refs)
	out := map[lvmlock.Ref][]peer.Holder{}
	for _, r := range refs {
		for host, m := range p.lvm.Holders(r.VG, r.LV) {
			if host != p.self {
				out[r] = append(out[r], peer.Holder{Host: p.names[host], Mode: m})
			}
		}
	}
	return out, nil
}

// checkWorld is host kvm1 (id 1) of a two-host fake cluster.
type checkWorld struct {
	t       testing.TB
	lvm     *lvmfake.Cluster
	lib     *fakeLibvirt
	state   *state.State
	holders HolderSource
	// sanlock: check reads sanlock too; hostIDs names its host_ids.
	sanlock bool
	hostIDs map[int]string
	devs    map[string]bool // device paths that exist although lvm does not know them
	n       int
}

func newCheckWorld(t testing.TB) *checkWorld {
	w := &checkWorld{t: t, lvm: lvmfake.NewCluster(2), lib: newFakeLibvirt(), devs: map[string]bool{},
		state: &state.State{Dir: t.TempDir(), Now: func() time.Time { return checkNow }}}
	w.lvm.AddVG("vg0", true, "web-root", "web-data", "db-root", "db-data", "cfs", "thin1", "golden")
	w.lvm.AddVG("vg1", true, "mig-root", "old-root", "left-root")
	w.lvm.AddVG("local", false, "scratch")
	return w
}

var checkNow = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

// domain defines a domain on kvm1. A disk is "vg/lv", "vg/lv:shareable",
// "vg/lv:optout" (the domain opts out of lvhook) or "pool:POOL/VOL".
func (w *checkWorld) domain(name, state string, job Job, disks ...string) virt.Listed {
	w.n++
	d := virt.Listed{Domain: virt.Domain{Name: name, UUID: fmt.Sprintf("%08d-1111-4222-8333-%012d", w.n, w.n)}, StateName: state}
	if state == "shutoff" {
		d.State = virt.StateShutoff
	}
	w.lib.doms = append(w.lib.doms, d)
	w.lib.xml[d.UUID] = domainXMLFor(name, d.UUID, disks...)
	if kind, ok := map[Job]virt.JobKind{JobMigrationOut: virt.JobMigrationOut, JobMigrationIn: virt.JobMigrationIn, JobOther: virt.JobOther}[job]; ok {
		w.lib.jobs[d.UUID] = virt.Job{Kind: kind}
	}
	return d
}

func domainXMLFor(name, uuid string, disks ...string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "<domain type='kvm'>\n  <name>%s</name>\n  <uuid>%s</uuid>\n  <devices>\n", name, uuid)
	optOut := false
	for i, spec := range disks {
		target := fmt.Sprintf("vd%c", 'a'+i)
		switch {
		case strings.HasPrefix(spec, "pool:"):
			pool, vol, _ := strings.Cut(strings.TrimPrefix(spec, "pool:"), "/")
			fmt.Fprintf(&b, "    <disk type='volume' device='disk'><source pool='%s' volume='%s'/><target dev='%s'/></disk>\n", pool, vol, target)
		case strings.HasSuffix(spec, ":shareable"):
			fmt.Fprintf(&b, "    <disk type='block' device='disk'><source dev='/dev/%s'/><target dev='%s'/><shareable/></disk>\n", strings.TrimSuffix(spec, ":shareable"), target)
		case strings.HasSuffix(spec, ":optout"):
			optOut = true
			fmt.Fprintf(&b, "    <disk type='block' device='disk'><source dev='/dev/%s'/><target dev='%s'/></disk>\n", strings.TrimSuffix(spec, ":optout"), target)
		default:
			fmt.Fprintf(&b, "    <disk type='block' device='disk'><source dev='/dev/%s'/><target dev='%s'/></disk>\n", spec, target)
		}
	}
	b.WriteString("  </devices>\n")
	if optOut {
		fmt.Fprintf(&b, "  <metadata><lvhook:domain xmlns:lvhook='%s' manage='no'/></metadata>\n", domxml.MetadataNS)
	}
	b.WriteString("</domain>\n")
	return []byte(b.String())
}

// hold makes host hold vg/lv in mode (active there).
func (w *checkWorld) hold(host int, vg, lv string, m lvmlock.Mode) {
	w.lvm.Do(func(c *lvmfake.Cluster) { c.VGs[vg].LVs[lv].Holders[host] = m })
}

func (w *checkWorld) checker() *Checker {
	return &Checker{
		Libvirt:    w.lib,
		LVM:        &lvmlock.Client{Runner: w.lvm.Host(1), Log: zerolog.Nop()},
		State:      w.state,
		PoolDir:    poolDir,
		Holders:    w.holders,
		Sanlock:    sanlockOf(w),
		HostIDs:    w.hostIDs,
		Host:       "kvm1",
		Now:        func() time.Time { return checkNow },
		PathExists: func(p string) bool { return w.devs[p] },
	}
}

func sanlockOf(w *checkWorld) *lvmlock.Sanlock {
	if !w.sanlock {
		return nil
	}
	// The fake's sanlock read its leases at 5000 s of its clock.
	return &lvmlock.Sanlock{Runner: w.lvm.Host(1), Now: func() uint64 { return 5000 }}
}

// peersDown is a HolderSource whose peers do not answer.
type peersDown struct{}

func (peersDown) Holders(context.Context, []lvmlock.Ref) (map[lvmlock.Ref][]peer.Holder, error) {
	return nil, errors.New("kvm2: dial tcp 10.0.0.2:16515: connect: no route to host")
}

// checkCase is one situation on kvm1 and what check must find.
type checkCase struct {
	name  string
	setup func(w *checkWorld)
	// domains to check; nil: --all
	domains []string
	// want lists "code domain vg/lv" for every problem, worst first.
	want []string
}

// healthy: web runs here (two LVs ex, a cluster filesystem sh with kvm2),
// db runs on kvm2, rescue has no LV.
func healthy(w *checkWorld) {
	w.domain("web", "running", JobNone, "vg0/web-root", "vg0/web-data", "vg0/cfs:shareable")
	w.hold(1, "vg0", "web-root", lvmlock.ModeEx)
	w.hold(1, "vg0", "web-data", lvmlock.ModeEx)
	w.hold(1, "vg0", "cfs", lvmlock.ModeSh)
	w.hold(2, "vg0", "cfs", lvmlock.ModeSh)
	w.domain("db", "shutoff", JobNone, "vg0/db-root", "vg0/db-data")
	w.hold(2, "vg0", "db-root", lvmlock.ModeEx)
	w.hold(2, "vg0", "db-data", lvmlock.ModeEx)
	w.domain("rescue", "shutoff", JobNone)
}

var checkCases = []checkCase{
	{name: "healthy", setup: healthy},
	{
		// No peers configured: the other holders come from sanlock's
		// leases, named by sanlock's host names.
		name: "healthy-sanlock",
		setup: func(w *checkWorld) {
			healthy(w)
			w.sanlock = true
		},
	},
	{
		// The peers do not answer: sanlock's leases instead, named by the
		// configured host_ids.
		name: "peers-down-sanlock",
		setup: func(w *checkWorld) {
			healthy(w)
			w.sanlock, w.holders, w.hostIDs = true, peersDown{}, map[int]string{1: "kvm1", 2: "kvm2.example.net"}
		},
	},
	{
		// kvm2 ran db and stopped renewing its host lease 95 s ago: its
		// locks hold about 45 s more.
		name: "host-not-renewing",
		setup: func(w *checkWorld) {
			healthy(w)
			w.sanlock, w.holders = true, peersDown{}
			w.lvm.Do(func(c *lvmfake.Cluster) { c.Silent[2] = 95 })
		},
		want: []string{"host-not-renewing  vg0/"},
	},
	{
		name: "host-dead",
		setup: func(w *checkWorld) {
			w.domain("db", "shutoff", JobNone, "vg0/db-root", "vg0/db-data")
			w.hold(2, "vg0", "db-root", lvmlock.ModeEx)
			w.hold(2, "vg0", "db-data", lvmlock.ModeEx)
			w.sanlock, w.holders = true, peersDown{}
			w.lvm.Do(func(c *lvmfake.Cluster) { c.Silent[2] = 200 })
		},
		want: []string{"host-not-renewing db vg0/"},
	},
	{
		// host2's holds were written before it joined again (older
		// generation): no hold.
		name: "sanlock-stale-holds",
		setup: func(w *checkWorld) {
			healthy(w)
			w.sanlock, w.holders = true, peersDown{}
			w.lvm.Do(func(c *lvmfake.Cluster) { c.Generation[2] = 4 })
		},
	},
	{
		// host2 left the lockspace: what its leases still show is no hold.
		name: "sanlock-host-left",
		setup: func(w *checkWorld) {
			healthy(w)
			w.sanlock, w.holders = true, peersDown{}
			w.lvm.Do(func(c *lvmfake.Cluster) { c.Left[2] = true })
		},
	},
	{
		// This host's own renewals stopped (its storage path is failing).
		name: "self-not-renewing",
		setup: func(w *checkWorld) {
			healthy(w)
			w.sanlock = true
			w.holders = &peersFromCluster{lvm: w.lvm, self: 1, names: map[int]string{2: "kvm2"}}
			w.lvm.Do(func(c *lvmfake.Cluster) { c.Silent[1] = 70 })
		},
		want: []string{"host-not-renewing  vg0/"},
	},
	{
		// The peers are down and the lease read fails: unknown, with both
		// reasons.
		name: "peers-and-leases-unreadable",
		setup: func(w *checkWorld) {
			healthy(w)
			w.sanlock, w.holders = true, peersDown{}
			w.lvm.Intercept = func(_ int, args []string) (string, string, error, bool) {
				if len(args) > 1 && args[0] == "sanlock" && args[1] == "direct" {
					return "", "Device /dev/mapper/vg0-lvmlock not found.\n", lvmfake.ExitError{Code: 1}, true
				}
				return "", "", nil, false
			}
		},
	},
	{
		// sanlock does not answer: the check goes on without it.
		name: "sanlock-unreadable",
		setup: func(w *checkWorld) {
			healthy(w)
			w.sanlock = true
			w.lvm.Intercept = func(_ int, args []string) (string, string, error, bool) {
				if args[0] == "sanlock" {
					return "", "", &exec.Error{Name: "sanlock", Err: exec.ErrNotFound}, true
				}
				return "", "", nil, false
			}
		},
	},
	{
		name: "healthy-peers",
		setup: func(w *checkWorld) {
			healthy(w)
			w.holders = &peersFromCluster{lvm: w.lvm, self: 1, names: map[int]string{2: "kvm2"}}
		},
	},
	{
		name: "migrating-out",
		setup: func(w *checkWorld) {
			w.domain("mig", "running", JobMigrationOut, "vg1/mig-root")
			w.hold(1, "vg1", "mig-root", lvmlock.ModeSh)
			w.hold(2, "vg1", "mig-root", lvmlock.ModeSh)
		},
	},
	{
		// The destination of a live migration: paused, sh here and on the
		// source (libvirt shows it by refusing the job's statistics).
		name: "migrating-in",
		setup: func(w *checkWorld) {
			w.domain("mig", "paused", JobMigrationIn, "vg1/mig-root")
			w.hold(1, "vg1", "mig-root", lvmlock.ModeSh)
			w.hold(2, "vg1", "mig-root", lvmlock.ModeSh)
		},
	},
	{
		name: "lv-missing",
		setup: func(w *checkWorld) {
			w.domain("web", "shutoff", JobNone, "vg0/web-root", "vg0/web-gone")
		},
		want: []string{"lv-missing web vg0/web-gone"},
	},
	{
		name: "vg-missing",
		setup: func(w *checkWorld) {
			w.domain("web", "shutoff", JobNone, "vg0/web-root", "vgx/web-root", "sdb/notanlv")
			w.devs["/dev/sdb/notanlv"] = true // a device that only looks like an LV path
		},
		want: []string{"vg-missing web vgx/web-root"},
	},
	{
		name: "vg-not-shared",
		setup: func(w *checkWorld) {
			w.domain("web", "running", JobNone, "vg0/web-root", "local/scratch")
			w.hold(1, "vg0", "web-root", lvmlock.ModeEx)
			w.hold(1, "local", "scratch", lvmlock.ModeEx)
		},
		want: []string{"vg-not-shared web local/scratch"},
	},
	{
		name: "lockspace-not-started",
		setup: func(w *checkWorld) {
			w.domain("mig", "shutoff", JobNone, "vg1/mig-root")
			w.domain("web", "shutoff", JobNone, "vg0/web-root")
			w.lvm.Do(func(c *lvmfake.Cluster) { c.Started[1]["vg1"] = false })
		},
		want: []string{"lockspace-not-started  vg1/"},
	},
	{
		name: "lvmlockd-not-running",
		setup: func(w *checkWorld) {
			w.domain("web", "shutoff", JobNone, "vg0/web-root")
			w.lvm.Do(func(c *lvmfake.Cluster) { c.Lvmlockd[1] = false })
		},
		want: []string{"lvmlockd-not-running  /"},
	},
	{
		name: "shared-unsupported",
		setup: func(w *checkWorld) {
			w.lvm.Do(func(c *lvmfake.Cluster) {
				c.VGs["vg0"].LVs["thin1"].Segtype = "thin"
				c.VGs["vg0"].LVs["golden"].Attr = "owi-------"
			})
			w.domain("web", "running", JobNone, "vg0/web-root", "vg0/thin1")
			w.hold(1, "vg0", "web-root", lvmlock.ModeEx)
			w.hold(1, "vg0", "thin1", lvmlock.ModeEx)
			w.domain("db", "shutoff", JobNone, "vg0/golden:shareable")
		},
		want: []string{"shared-unsupported db vg0/golden", "shared-unsupported web vg0/thin1"},
	},
	{
		name: "stale-activation",
		setup: func(w *checkWorld) {
			w.domain("web", "shutoff", JobNone, "vg0/web-root", "vg0/web-data")
			w.hold(1, "vg0", "web-root", lvmlock.ModeEx)
		},
		want: []string{"stale-activation web vg0/web-root"},
	},
	{
		name: "sh-after-migration",
		setup: func(w *checkWorld) {
			d := w.domain("mig", "running", JobNone, "vg1/mig-root")
			w.hold(1, "vg1", "mig-root", lvmlock.ModeSh)
			if err := w.state.Save(state.DomainsDir, state.Record{Name: "mig", UUID: d.UUID, Incoming: true,
				LVs: []state.RecordLV{{VG: "vg1", LV: "mig-root", Mode: lvmlock.ModeEx}}}); err != nil {
				w.t.Fatal(err)
			}
		},
		want: []string{"sh-after-migration mig vg1/mig-root"},
	},
	{
		name: "held-elsewhere",
		setup: func(w *checkWorld) {
			w.domain("mig", "running", JobNone, "vg1/mig-root")
			w.hold(1, "vg1", "mig-root", lvmlock.ModeSh)
			w.hold(2, "vg1", "mig-root", lvmlock.ModeSh) // the source never let go
			w.holders = &peersFromCluster{lvm: w.lvm, self: 1, names: map[int]string{2: "kvm2"}}
		},
		want: []string{"held-elsewhere mig vg1/mig-root", "sh-after-migration mig vg1/mig-root"},
	},
	{
		name: "pending-deactivation",
		setup: func(w *checkWorld) {
			d := w.domain("old", "shutoff", JobNone, "vg1/old-root")
			w.hold(1, "vg1", "old-root", lvmlock.ModeEx)
			w.hold(1, "vg1", "left-root", lvmlock.ModeEx)
			since := checkNow.Add(-10 * time.Minute)
			for _, r := range []state.Record{
				{Name: "old", UUID: d.UUID, LVs: []state.RecordLV{{VG: "vg1", LV: "old-root"}}, Since: since},
				// a domain undefined since its failed stop
				{Name: "gone", UUID: "99999999-1111-4222-8333-999999999999", LVs: []state.RecordLV{{VG: "vg1", LV: "left-root"}}, Since: since},
			} {
				if err := w.state.Save(state.PendingDir, r); err != nil {
					w.t.Fatal(err)
				}
			}
		},
		want: []string{"stale-activation old vg1/old-root", "pending-deactivation gone vg1/left-root"},
	},
	{
		name: "active-unlocked",
		setup: func(w *checkWorld) {
			w.domain("web", "running", JobNone, "vg0/web-root")
			w.hold(1, "vg0", "web-root", lvmlock.ModeEx)
			// activated with --lockopt skiplv: lvs shows it active,
			// lvmlockd holds nothing.
			w.lvm.Intercept = func(host int, args []string) (string, string, error, bool) {
				if args[0] != "lvmlockctl" {
					return "", "", nil, false
				}
				return "VG vg0 lock_type=sanlock vguuid-vg0\nLS sanlock lvm_vg0\n", "", nil, true
			}
		},
		want: []string{"active-unlocked web vg0/web-root"},
	},
	{
		name: "not-locked",
		setup: func(w *checkWorld) {
			w.domain("web", "running", JobNone, "vg0/web-root")
		},
		want: []string{"not-locked web vg0/web-root"},
	},
	{
		name: "mode-mismatch",
		setup: func(w *checkWorld) {
			w.domain("web", "running", JobNone, "vg0/web-root", "vg0/cfs:shareable")
			w.hold(1, "vg0", "web-root", lvmlock.ModeEx)
			w.hold(1, "vg0", "cfs", lvmlock.ModeEx)
		},
		want: []string{"mode-mismatch web vg0/cfs"},
	},
	{
		name: "domain-unreadable",
		setup: func(w *checkWorld) {
			w.domain("web", "shutoff", JobNone, "pool:nosuchpool/web-root")
		},
		want: []string{"domain-unreadable web /"},
	},
	{
		name: "opted-out-and-pool",
		setup: func(w *checkWorld) {
			w.domain("legacy", "shutoff", JobNone, "vg0/web-root:optout")
			w.hold(1, "vg0", "web-root", lvmlock.ModeEx) // not judged: opted out
			w.domain("pooled", "running", JobNone, "pool:vgpool/db-root")
			w.hold(1, "vg0", "db-root", lvmlock.ModeEx)
		},
	},
	{
		// The lock helper's problems files: one per domain (mig's LV, web
		// and legacy as a whole, gone no longer defined here), and db's,
		// which cannot be read.
		name:  "helper-cannot-repair",
		setup: helperProblems,
		want: []string{"sh-after-migration mig vg1/mig-root", "helper-cannot-repair db /", "helper-cannot-repair gone /",
			"helper-cannot-repair legacy /", "helper-cannot-repair mig vg1/mig-root", "helper-cannot-repair web /"},
	},
	{
		name:    "named",
		domains: []string{"db", "00000001-1111-4222-8333-000000000001"},
		setup: func(w *checkWorld) {
			w.domain("web", "running", JobNone, "vg0/web-root")
			w.hold(1, "vg0", "web-root", lvmlock.ModeEx)
			w.domain("db", "shutoff", JobNone, "vg0/db-root")
			w.domain("other", "shutoff", JobNone, "vg0/db-data")
			w.hold(1, "vg0", "db-data", lvmlock.ModeEx) // stale, but not asked about
		},
	},
}

// helperProblems: web and mig run here, the lock helper could not repair
// them; legacy (opted out) it could not read from libvirt; gone, which it
// has a record of, libvirt no longer lists; db's problems file is corrupt.
func helperProblems(w *checkWorld) {
	web := w.domain("web", "running", JobNone, "vg0/web-root", "vg0/web-data")
	w.hold(1, "vg0", "web-root", lvmlock.ModeEx)
	w.hold(1, "vg0", "web-data", lvmlock.ModeEx)
	mig := w.domain("mig", "running", JobNone, "vg1/mig-root")
	w.hold(1, "vg1", "mig-root", lvmlock.ModeSh)
	w.hold(2, "vg1", "mig-root", lvmlock.ModeSh)
	if err := w.state.Save(state.DomainsDir, state.Record{Name: "mig", UUID: mig.UUID, Incoming: true,
		LVs: []state.RecordLV{{VG: "vg1", LV: "mig-root", Mode: lvmlock.ModeEx}}}); err != nil {
		w.t.Fatal(err)
	}
	db := w.domain("db", "shutoff", JobNone, "vg0/db-root")
	legacy := w.domain("legacy", "running", JobNone, "vg0/cfs:optout")
	checked := checkNow.Add(-20 * time.Second)
	for _, dp := range []state.DomainProblems{
		{Name: "web", UUID: web.UUID, Host: "kvm1", Checked: checked, Problems: []state.Problem{
			{What: "lvhook has no record of this domain here (started before lvhook was installed?): its LVs are not repaired"}}},
		{Name: "mig", UUID: mig.UUID, Host: "kvm1", Checked: checked, Problems: []state.Problem{
			{VG: "vg1", LV: "mig-root", What: "still shared since 2026-11-22T09:50:00Z although no migration needs it (lock held by other host); another host still holds it shared"}}},
		{Name: "legacy", UUID: legacy.UUID, Host: "kvm1", Checked: checked, Problems: []state.Problem{
			{What: "cannot read from libvirt: Requested operation is not valid: domain is not running"}}},
		{Name: "gone", UUID: "99999999-1111-4222-8333-999999999999", Host: "kvm1", Checked: checked, Problems: []state.Problem{
			{What: "recorded as running here since 2026-11-22T08:00:00Z, but libvirt does not list it; its LVs stay as they are"}}},
	} {
		if err := w.state.SaveProblems(dp); err != nil {
			w.t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(w.state.Dir, state.ProblemsDir, db.UUID+".json"), []byte(`{"name": "db", "uuid": `), 0o644); err != nil {
		w.t.Fatal(err)
	}
}

// A named check reports the lock helper's problems of the named domains
// only, a corrupt file included; a problems directory check cannot read
// is reported, not an error.
func TestCheckHelperProblems(t *testing.T) {
	for _, tc := range []struct {
		names []string
		want  []string
	}{
		{[]string{"web"}, []string{"helper-cannot-repair web /"}},
		{[]string{"db", "web"}, []string{"helper-cannot-repair db /", "helper-cannot-repair web /"}},
		{[]string{"legacy"}, []string{"helper-cannot-repair legacy /"}},
		{[]string{"00000002-1111-4222-8333-000000000002"}, []string{"sh-after-migration mig vg1/mig-root", "helper-cannot-repair mig vg1/mig-root"}},
	} {
		w := newCheckWorld(t)
		helperProblems(w)
		rep, err := w.checker().Check(context.Background(), tc.names)
		if err != nil {
			t.Fatalf("%v: %v", tc.names, err)
		}
		if diff := cmp.Diff(tc.want, problemKeys(rep)); diff != "" {
			t.Errorf("%v: problems (-want +got):\n%s", tc.names, diff)
		}
		n := 0
		for _, d := range rep.Domains {
			n += d.Problems
		}
		if n != len(rep.Problems) {
			t.Errorf("%v: the domains count %d problems, want %d: each is one of a checked domain", tc.names, n, len(rep.Problems))
		}
	}

	w := newCheckWorld(t)
	w.domain("web", "shutoff", JobNone, "vg0/web-root")
	if err := os.WriteFile(filepath.Join(w.state.Dir, state.ProblemsDir), []byte("not a directory\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rep, err := w.checker().Check(context.Background(), []string{"web"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"helper-cannot-repair  /"}, problemKeys(rep)); diff != "" {
		t.Fatalf("problems directory unreadable: problems (-want +got):\n%s", diff)
	}
	if p := rep.Problems[0]; !strings.Contains(p.Message, "not a directory") || !strings.Contains(p.Advice, "journalctl -u lvhook") {
		t.Errorf("problems directory unreadable: %+v", p)
	}
}

func TestCheckAutostartRefused(t *testing.T) {
	w := newCheckWorld(t)
	web := w.domain("web", "shutoff", JobNone, "vg0/web-root")
	db := w.domain("db", "shutoff", JobNone, "vg0/db-root")
	run := w.domain("run", "running", JobNone, "vg0/cfs")
	w.hold(1, "vg0", "cfs", lvmlock.ModeEx)
	w.hold(2, "vg0", "web-root", lvmlock.ModeEx)
	w.lib.autostart = map[string]bool{web.UUID: true, run.UUID: true}
	st := &state.State{Dir: w.state.Dir, Now: func() time.Time { return checkNow }}
	for _, d := range []virt.Listed{web, db, run} {
		line := "refusing to start " + d.Name + ": vg0/some-root is active on kvm2 (host_id 2) (lvmlockd: LV locked by other host); is " + d.Name + " running elsewhere?"
		if err := st.SaveRefused(state.Refused{Name: d.Name, UUID: d.UUID, Line: line}); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := w.checker().Check(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	// db is not set to autostart, run runs (started since: its record is
	// stale): only web is reported.
	if diff := cmp.Diff([]string{"autostart-refused web /"}, problemKeys(rep)); diff != "" {
		t.Fatalf("problems (-want +got):\n%s", diff)
	}
	p := rep.Problems[0]
	if !strings.Contains(p.Message, "is active on kvm2 (host_id 2)") || !strings.Contains(p.Advice, "virsh start web") {
		t.Errorf("problem %+v", p)
	}
	if n := w.lib.calls["autostart"]; n != 2 {
		t.Errorf("autostart asked %d times, want 2 (only for the domains not running with a record)", n)
	}
}

func problemKeys(rep *Report) []string {
	out := []string{}
	for _, p := range rep.Problems {
		out = append(out, fmt.Sprintf("%s %s %s/%s", p.Code, p.Domain, p.VG, p.LV))
	}
	return out
}

func TestCheck(t *testing.T) {
	for _, tc := range checkCases {
		t.Run(tc.name, func(t *testing.T) {
			w := newCheckWorld(t)
			tc.setup(w)
			rep, err := w.checker().Check(context.Background(), tc.domains)
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			want := tc.want
			if want == nil {
				want = []string{}
			}
			if diff := cmp.Diff(want, problemKeys(rep)); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
			if rep.Healthy != (len(want) == 0) {
				t.Errorf("Healthy = %v with %d problems", rep.Healthy, len(want))
			}
			for _, p := range rep.Problems {
				if _, ok := problemRank[p.Code]; !ok {
					t.Errorf("problem code %s has no row in ProblemTable", p.Code)
				}
			}
			var table, js bytes.Buffer
			if err := rep.WriteTable(&table); err != nil {
				t.Fatal(err)
			}
			if err := rep.WriteJSON(&js); err != nil {
				t.Fatal(err)
			}
			golden(t, tc.name+".txt", table.Bytes())
			golden(t, tc.name+".json", js.Bytes())
		})
	}
}

// golden compares got with testdata/check/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	testutil.Golden(t, filepath.Join("..", "testdata", "check", name), got, *update)
}

func TestCheckLVReports(t *testing.T) {
	w := newCheckWorld(t)
	healthy(w)
	rep, err := w.checker().Check(context.Background(), []string{"web", "db"})
	if err != nil {
		t.Fatal(err)
	}
	type row struct{ Domain, LV, Expected, Actual, Lockspace, Others string }
	var got []row
	for _, d := range rep.Domains {
		for _, l := range d.LVs {
			got = append(got, row{d.Name, l.VG + "/" + l.LV, l.Expected, l.Actual, l.Lockspace, l.Others.String()})
		}
	}
	want := []row{
		{"web", "vg0/web-root", "ex", "ex", "started", "none (ex here)"},
		{"web", "vg0/web-data", "ex", "ex", "started", "none (ex here)"},
		{"web", "vg0/cfs", "sh", "sh", "started", "unknown"},
		{"db", "vg0/db-root", "none", "none", "started", "unknown"},
		{"db", "vg0/db-data", "none", "none", "started", "unknown"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("LV rows (-want +got):\n%s", diff)
	}
}

func TestCheckCouldNotCheck(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(w *checkWorld)
		domains []string
		want    string
	}{
		{"libvirt down", func(w *checkWorld) {
			w.lib.listErr = errors.New("dial unix /run/libvirt/libvirt-sock-ro: connect: no such file or directory")
		},
			nil, "list libvirt domains: dial unix"},
		{"unknown domain", func(w *checkWorld) { w.domain("web", "shutoff", JobNone) },
			[]string{"web", "nope", "neither"}, "nope, neither: domain not defined on this host"},
		{"lvs fails", func(w *checkWorld) {
			w.domain("web", "shutoff", JobNone, "vg0/web-root")
			w.lvm.Intercept = func(host int, args []string) (string, string, error, bool) {
				if args[0] == "lvs" {
					return "", "  Reading VG vg0 failed: device scan error\n", lvmfake.ExitError{Code: 5}, true
				}
				return "", "", nil, false
			}
		}, nil, "lvs: lvs --reportformat json"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newCheckWorld(t)
			tc.setup(w)
			_, err := w.checker().Check(context.Background(), tc.domains)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestCheckCosts pins what a check costs whatever the number of domains:
// one libvirt list, one lvs, one lvmlockctl; one XML per domain and one job
// query per active domain; with sanlock, one client status and one
// host_status per VG, and one direct dump per VG when the peers are down.
func TestCheckCosts(t *testing.T) {
	for _, n := range []int{1, 10, 100} {
		for _, mode := range []string{"no sanlock", "sanlock", "sanlock, peers down"} {
			w := manyDomains(t, n)
			want := map[string]int{"list": 1, "xml": n, "job": (n + 1) / 2, "lvs": 1, "lvmlockctl": 1}
			switch mode {
			case "sanlock":
				w.sanlock = true
				w.holders = &peersFromCluster{lvm: w.lvm, self: 1, names: map[int]string{2: "kvm2"}}
				want["sanlock"] = 2
			case "sanlock, peers down":
				w.sanlock, w.holders = true, peersDown{}
				want["sanlock"] = 2
				if n > 1 {
					want["sanlock"] = 3 // a domain not running here: its LVs' leases are read
				}
			}
			if _, err := w.checker().Check(context.Background(), nil); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, checkCalls(w)); diff != "" {
				t.Errorf("%d domains, %s: calls (-want +got):\n%s", n, mode, diff)
			}
		}
	}
}

func checkCalls(w *checkWorld) map[string]int {
	got := map[string]int{}
	for k, v := range w.lib.calls {
		got[k] = v
	}
	for _, c := range w.lvm.Calls(1) {
		got[strings.Fields(c)[0]]++
	}
	return got
}

// manyDomains defines n two-disk domains on one shared VG; every other one
// runs here with its LVs ex, the rest are shut off.
func manyDomains(t testing.TB, n int) *checkWorld {
	w := newCheckWorld(t)
	var lvs []string
	for i := range n {
		lvs = append(lvs, fmt.Sprintf("vm%d-root", i), fmt.Sprintf("vm%d-data", i))
	}
	w.lvm.AddVG("big", true, lvs...)
	for i := range n {
		state := "shutoff"
		if i%2 == 0 {
			state = "running"
		}
		w.domain(fmt.Sprintf("vm%d", i), state, JobNone, "big/"+lvs[2*i], "big/"+lvs[2*i+1])
		if state == "running" {
			w.hold(1, "big", lvs[2*i], lvmlock.ModeEx)
			w.hold(1, "big", lvs[2*i+1], lvmlock.ModeEx)
		}
	}
	return w
}

// BenchmarkCheckAll500 is `lvhook check --all` over 500 domains (1000 LVs)
// on the fakes: lvhook's own time, without libvirt's, lvm's or sanlock's.
// The peers do not answer: the other holders come from sanlock's leases.
func BenchmarkCheckAll500(b *testing.B) {
	w := manyDomains(b, 500)
	w.sanlock, w.holders = true, peersDown{}
	c := w.checker()
	w.lvm.ResetCalls()
	for k := range w.lib.calls {
		delete(w.lib.calls, k)
	}
	b.ResetTimer()
	for b.Loop() {
		rep, err := c.Check(context.Background(), nil)
		if err != nil {
			b.Fatal(err)
		}
		if !rep.Healthy || rep.Summary.LVs != 1000 {
			b.Fatalf("unexpected report: healthy=%v lvs=%d", rep.Healthy, rep.Summary.LVs)
		}
	}
	b.StopTimer()
	calls := checkCalls(w)
	for _, k := range []string{"list", "lvs", "lvmlockctl", "sanlock", "xml", "job"} {
		b.ReportMetric(float64(calls[k])/float64(b.N), k+"/op")
	}
}

// TestEvaluateReadsNothing: the rules run on what gather read alone. For
// every case, evaluating the gathered reads with every reader of the Checker
// unset (a read would panic) gives the report Check gives.
func TestEvaluateReadsNothing(t *testing.T) {
	for _, tc := range checkCases {
		t.Run(tc.name, func(t *testing.T) {
			w := newCheckWorld(t)
			tc.setup(w)
			c := w.checker()
			want, err := c.Check(context.Background(), tc.domains)
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			g, err := c.gather(context.Background(), tc.domains)
			if err != nil {
				t.Fatal(err)
			}
			g.Checker = &Checker{Host: c.Host, HostIDs: c.HostIDs, State: &state.State{Dir: c.State.Dir}}
			if diff := cmp.Diff(want, g.evaluate(), cmpopts.IgnoreUnexported(Problem{})); diff != "" {
				t.Errorf("evaluate without readers (-Check +evaluate):\n%s", diff)
			}
		})
	}
}
