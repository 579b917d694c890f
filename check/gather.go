package check

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/lvhook/lvhook/domxml"
	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/peer"
	"github.com/lvhook/lvhook/state"
	"github.com/lvhook/lvhook/virt"
)

// Libvirt is what check reads from the local libvirtd, read-only
// (virt.Conn, read-only socket).
type Libvirt interface {
	// Domains lists every domain of this host with its state, in one call.
	Domains(ctx context.Context) ([]virt.Listed, error)
	// DomainXML returns a domain's XML: the live one of an active domain.
	DomainXML(ctx context.Context, uuid string) ([]byte, error)
	// DomainJob returns the current job of an active domain: an incoming
	// migration on a live migration's destination, where libvirt refuses
	// job statistics.
	DomainJob(ctx context.Context, uuid string) (virt.Job, error)
	// DomainAutostart tells whether libvirt autostarts the domain; asked
	// only of domains with a refused start on record.
	DomainAutostart(ctx context.Context, uuid string) (bool, error)
}

// HolderSource tells which other hosts hold LV locks. The peers' lock
// helpers answer it; check asks it once per run, for the LVs whose other
// holders cannot be deduced locally.
type HolderSource interface {
	Holders(ctx context.Context, refs []lvmlock.Ref) (map[lvmlock.Ref][]peer.Holder, error)
}

// Checker runs `lvhook check` on this host.
type Checker struct {
	Libvirt Libvirt
	LVM     *lvmlock.Client
	State   *state.State
	// PoolDir holds libvirt's storage pool definitions (StoragePoolDir).
	PoolDir string
	// Holders, when set, names the other hosts holding an LV; without it
	// they are unknown unless this host holds the LV ex.
	Holders HolderSource
	// Sanlock, when set, is read for the hosts of each started lockspace
	// (which one stopped renewing), and for the LV leases when Holders is
	// unset or does not answer.
	Sanlock *lvmlock.Sanlock
	// HostIDs names sanlock host_ids (the configured peers).
	HostIDs map[int]string
	// Host names this host in the report.
	Host string
	// Now and PathExists default to the clock and os.Stat; tests set them.
	Now        func() time.Time
	PathExists func(string) bool
	// Parallel bounds the libvirt calls in flight (default 8).
	Parallel int
}

// domainInput is what libvirt gave for one checked domain.
type domainInput struct {
	lib virt.Listed
	job Job
	xml []byte
	err error
	dom *domxml.Domain
}

// ErrDomainNotFound is returned, wrapped, for a named domain libvirt does not
// list on this host.
var ErrDomainNotFound = errors.New("domain not defined on this host")

// Check checks the named domains (name or UUID), or every domain of this
// host when names is empty. An error means nothing could be checked. It reads
// everything first (gather), then applies the rules to what it read
// (evaluate, which does no I/O).
func (c *Checker) Check(ctx context.Context, names []string) (*Report, error) {
	g, err := c.gather(ctx, names)
	if err != nil {
		return nil, err
	}
	return g.evaluate(), nil
}

// gathered is everything one check reads, before any rule runs.
type gathered struct {
	*Checker
	checkedAt time.Time
	// all: every domain of the host (--all), not named ones.
	all      bool
	listed   []virt.Listed
	selected []virt.Listed
	inputs   []*domainInput
	records  map[string]state.Record
	pending  []state.Record
	st       *lvmlock.State
	lockErr  error
	// vgs holds one LV of each VG lvs reported, for the VG's lock type.
	vgs map[string]lvmlock.LV
	// paths tells whether the /dev paths of the disks of VGs lvm does
	// not know exist (some other device that looks like /dev/VG/LV).
	paths map[string]bool
	// From sanlock, by VG: this host's lockspace, its hosts, or why they
	// could not be read.
	spaces     map[string]lvmlock.SanlockLockspace
	hosts      map[string]map[int]lvmlock.SanlockHost
	sanlockErr map[string]string
	others     othersRead
	// The lock helper's problems files, and why some cannot be read.
	helperFiles []state.DomainProblems
	helperErr   error
	// killed: the VGs killed on this host (kill-vg's records, killed.go),
	// those whose record cannot be read included.
	killed killedRead
	// refusedAutostarts: domains libvirt autostarts, not running, whose
	// last start here lvhook refused (the hook's refused records).
	refusedAutostarts []refusedStart
}

// refusedStart is a refused start of a listed domain.
type refusedStart struct {
	dom virt.Listed
	rec state.Refused
}

// othersRead is what the peers, or else the LV leases, told of the other
// holders of the LVs not held ex here.
type othersRead struct {
	asked  []lvmlock.Ref
	source string
	// holders is nil when none could be read.
	holders map[lvmlock.Ref][]Holder
	// Why the others stay unknown: for all, or by VG.
	why   string
	whyVG map[string]string
}

// gather does every read of a check: libvirt's list and the domains' XML and
// jobs, lvhook's records, one lvs and one lvmlockctl -i, sanlock's hosts, the
// other holders, and the lock helper's problems files.
func (c *Checker) gather(ctx context.Context, names []string) (*gathered, error) {
	g := &gathered{Checker: c, checkedAt: c.now().UTC(), all: len(names) == 0, vgs: map[string]lvmlock.LV{},
		paths: map[string]bool{}, spaces: map[string]lvmlock.SanlockLockspace{},
		hosts: map[string]map[int]lvmlock.SanlockHost{}, sanlockErr: map[string]string{}}
	var err error
	if g.listed, err = c.Libvirt.Domains(ctx); err != nil {
		return nil, fmt.Errorf("list libvirt domains: %w", err)
	}
	if g.selected, err = selectDomains(g.listed, names); err != nil {
		return nil, err
	}
	g.inputs = c.readDomains(ctx, g.selected)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("read libvirt domains: %w", err)
	}
	var refs []lvmlock.Ref
	for _, in := range g.inputs {
		if in.err == nil && !in.dom.OptedOut {
			refs = append(refs, in.dom.Refs()...)
		}
	}
	if g.records, g.pending, err = c.records(); err != nil {
		return nil, err
	}
	g.readKilled(ctx)
	if !g.all {
		g.pending = slices.DeleteFunc(g.pending, func(r state.Record) bool {
			return !slices.ContainsFunc(g.selected, func(d virt.Listed) bool { return strings.EqualFold(d.UUID, r.UUID) })
		})
	}
	for _, r := range g.pending {
		for _, l := range r.LVs {
			refs = append(refs, l.Ref())
		}
	}
	// A killed VG is lvm's no more: its storage may hang any lvm command.
	if g.st, g.lockErr, err = c.lvmState(ctx, g.killed.without(lvmlock.VGsOf(refs))); err != nil {
		return nil, err
	}
	for r, lv := range g.st.LVs {
		g.vgs[r.VG] = lv
	}
	for _, in := range g.inputs {
		if in.err != nil || in.dom.OptedOut {
			continue
		}
		for _, d := range in.dom.Disks {
			if strings.HasPrefix(d.Path, "/dev/") && slices.Contains(g.st.MissingVGs, d.VG) {
				g.paths[d.Path] = c.pathExists(d.Path)
			}
		}
	}
	g.readSanlock(ctx, lvmlock.VGsOf(refs))
	g.readOthers(ctx)
	if c.State != nil {
		g.helperFiles, g.helperErr = c.State.Problems()
		g.readRefused(ctx)
	}
	return g, nil
}

// readRefused finds the autostarted domains whose start lvhook refused and
// that still do not run: libvirt tries an autostart once per boot, and says
// so only in its journal. Unreadable records are skipped (the hook rewrites
// them at the next start).
func (g *gathered) readRefused(ctx context.Context) {
	recs, _ := g.State.AllRefused()
	for _, rec := range recs {
		i := slices.IndexFunc(g.selected, func(d virt.Listed) bool { return strings.EqualFold(d.UUID, rec.UUID) })
		if i < 0 || g.selected[i].Active() {
			continue
		}
		if on, err := g.Libvirt.DomainAutostart(ctx, g.selected[i].UUID); err == nil && on {
			g.refusedAutostarts = append(g.refusedAutostarts, refusedStart{dom: g.selected[i], rec: rec})
		}
	}
}

// readOthers asks who else holds the LVs of the checked domains that are
// not held ex here, in a started lockspace: one question to the
// HolderSource, or when it is unset or does not answer, one read of the LV
// leases per VG from sanlock. What cannot be read (a peer down, the check's
// time up) stays unknown, with why.
func (g *gathered) readOthers(ctx context.Context) {
	o := &g.others
	for _, in := range g.inputs {
		if in.err != nil || in.dom.OptedOut {
			continue
		}
		for _, d := range in.dom.Disks {
			if g.lockspaceOf(d.VG) == LockspaceStarted && !g.exHere(d.Ref) && !slices.Contains(o.asked, d.Ref) {
				o.asked = append(o.asked, d.Ref)
			}
		}
	}
	if len(o.asked) == 0 {
		return
	}
	o.source = OthersPeers
	var err error
	if g.Holders != nil {
		var answered map[lvmlock.Ref][]peer.Holder
		if answered, err = g.Holders.Holders(ctx, o.asked); err != nil {
			o.why = "peers: " + lvmlock.OneLine(err.Error())
		}
		o.holders = map[lvmlock.Ref][]Holder{}
		for ref, hs := range answered {
			for _, h := range hs {
				o.holders[ref] = append(o.holders[ref], Holder{Host: h.Host, Mode: h.Mode})
			}
		}
	}
	if (g.Holders == nil || err != nil) && len(g.spaces) > 0 {
		o.source = OthersSanlock
		o.holders, o.whyVG = g.leaseHolders(ctx, o.asked)
	} else if err != nil {
		o.holders = nil
	}
}

// exHere tells whether this host holds ref ex (active, lvmlockd's ex lock).
func (g *gathered) exHere(ref lvmlock.Ref) bool {
	lv, ok := g.st.LVs[ref]
	return ok && lv.Active && g.st.Locks.Mode(ref.VG, lv.UUID) == lvmlock.ModeEx
}

func (c *Checker) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Checker) pathExists(p string) bool {
	if c.PathExists != nil {
		return c.PathExists(p)
	}
	_, err := os.Stat(p)
	return err == nil
}

// selectDomains picks the named domains, by name or UUID, in the order
// named; all of them, sorted by name, when names is empty.
func selectDomains(listed []virt.Listed, names []string) ([]virt.Listed, error) {
	if len(names) == 0 {
		out := slices.Clone(listed)
		slices.SortFunc(out, func(a, b virt.Listed) int { return cmp.Compare(a.Name, b.Name) })
		return out, nil
	}
	var out []virt.Listed
	var missing []string
	for _, n := range names {
		i := slices.IndexFunc(listed, func(d virt.Listed) bool {
			return d.Name == n || strings.EqualFold(d.UUID, n)
		})
		switch {
		case i < 0:
			missing = append(missing, n)
		case !slices.ContainsFunc(out, func(d virt.Listed) bool { return d.UUID == listed[i].UUID }):
			out = append(out, listed[i])
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%s: %w", strings.Join(missing, ", "), ErrDomainNotFound)
	}
	return out, nil
}

// readDomains fetches and parses the XML of every domain and fetches the
// job of the active ones, a few calls in flight at a time.
func (c *Checker) readDomains(ctx context.Context, doms []virt.Listed) []*domainInput {
	inputs := make([]*domainInput, len(doms))
	parallel := c.Parallel
	if parallel <= 0 {
		parallel = 8
	}
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i, d := range doms {
		in := &domainInput{lib: d}
		inputs[i] = in
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			in.xml, in.err = c.Libvirt.DomainXML(ctx, d.UUID)
			if in.err != nil {
				in.err = fmt.Errorf("libvirt: domain XML: %w", in.err)
				return
			}
			if d.Active() {
				job, err := c.Libvirt.DomainJob(ctx, d.UUID)
				if err != nil {
					in.err = fmt.Errorf("libvirt: domain job: %w", err)
					return
				}
				in.job = reportJob(job)
			}
			in.dom, in.err = domxml.Parse(in.xml, c.PoolDir)
		}()
	}
	wg.Wait()
	return inputs
}

// lvmState runs the one lvs and, when a shared VG is involved, the one
// lvmlockctl -i of the check. lockErr is lvmlockctl's failure when lvmlockd
// is not running (a problem to report, not a reason to give up).
func (c *Checker) lvmState(ctx context.Context, vgs []string) (st *lvmlock.State, lockErr error, err error) {
	st = &lvmlock.State{LVs: map[lvmlock.Ref]lvmlock.LV{}, Locks: lvmlock.Locks{}}
	if len(vgs) == 0 {
		return st, nil, nil
	}
	lvs, missing, err := c.LVM.LVs(ctx, vgs...)
	if err != nil {
		return nil, nil, fmt.Errorf("lvs: %w", err)
	}
	st.MissingVGs = missing
	shared := false
	for _, lv := range lvs {
		st.LVs[lvmlock.Ref{VG: lv.VG, LV: lv.Name}] = lv
		shared = shared || lv.Shared()
	}
	if !shared {
		return st, nil, nil
	}
	locks, err := c.LVM.Locks(ctx)
	switch {
	case lvmlock.IsLvmlockdNotRunning(err):
		return st, err, nil
	case err != nil:
		return nil, nil, fmt.Errorf("lvmlockctl: %w", err)
	}
	st.Locks = locks
	return st, nil, nil
}

// records reads lvhook's domain and pending records of this host.
func (c *Checker) records() (map[string]state.Record, []state.Record, error) {
	if c.State == nil {
		return map[string]state.Record{}, nil, nil
	}
	doms, err := c.State.All(state.DomainsDir)
	if err != nil {
		return nil, nil, fmt.Errorf("state directory %s: %w", c.State.Dir, err)
	}
	pending, err := c.State.All(state.PendingDir)
	if err != nil {
		return nil, nil, fmt.Errorf("state directory %s: %w", c.State.Dir, err)
	}
	byUUID := make(map[string]state.Record, len(doms))
	for _, r := range doms {
		byUUID[r.UUID] = r
	}
	return byUUID, pending, nil
}

func (g *gathered) lockspaceOf(vg string) string {
	switch {
	case g.killed.has(vg):
		return LockspaceKilled
	case slices.Contains(g.st.MissingVGs, vg):
		return LockspaceVGMissing
	case !g.vgShared(vg):
		if g.vgKnown(vg) {
			return LockspaceLocal
		}
		return LockspaceUnknownKind
	case g.lockErr != nil:
		return LockspaceNoLvmlockd
	case g.st.Locks.Started(vg):
		return LockspaceStarted
	}
	return LockspaceNotStarted
}

func (g *gathered) vgShared(vg string) bool { return g.vgs[vg].Shared() }

func (g *gathered) vgKnown(vg string) bool { _, ok := g.vgs[vg]; return ok }
