package check

// check: `lvhook check`, the operator's view of what lvhook guards on this
// host. It runs from the command line, never from a hook call (a hook must not
// call libvirtd), and changes nothing: it reads libvirt's domains, one lvs,
// one lvmlockctl -i and lvhook's state directory, and reports per domain and
// LV what lock each should hold, what it holds, and the problems that would
// break a start or a live migration.

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

// Version is the version of the JSON document check writes. It changes
// only when a field is removed or changes meaning; new fields may appear in
// any version.
const Version = 1

// Job is a domain's current libvirt job, as the report names it.
type Job string

const (
	JobNone         Job = ""
	JobMigrationOut Job = "migration-out"
	JobMigrationIn  Job = "migration-in"
	JobOther        Job = "other"

	// jobNoneName is JobNone in the report.
	jobNoneName Job = "none"
)

// reportJob names a job for the report: a job whose operation libvirt does
// not tell is other.
func reportJob(j virt.Job) Job {
	switch j.Kind {
	case virt.JobNone:
		return JobNone
	case virt.JobMigrationOut:
		return JobMigrationOut
	case virt.JobMigrationIn:
		return JobMigrationIn
	}
	return JobOther
}

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
}

// Holder is another host holding an LV lock.
type Holder struct {
	Host string       `json:"host"`
	Mode lvmlock.Mode `json:"mode"`
	// HostID and State are set when sanlock told: the holder's host_id, and
	// whether it still renews its host lease (live, failing, dead).
	HostID int               `json:"host_id,omitempty"`
	State  lvmlock.HostState `json:"state,omitempty"`
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

// Report is the result of a check; its JSON form is documented on the check
// command (lvhook(8)) and versioned by Version.
type Report struct {
	Version   int       `json:"version"`
	Host      string    `json:"host"`
	CheckedAt time.Time `json:"checked_at"`
	Healthy   bool      `json:"healthy"`
	Summary   Summary   `json:"summary"`
	// Problems come worst first.
	Problems   []Problem         `json:"problems"`
	Lockspaces []LockspaceReport `json:"lockspaces"`
	Domains    []DomainReport    `json:"domains"`
}

// Summary counts what was checked.
type Summary struct {
	Domains  int `json:"domains"`
	LVs      int `json:"lvs"`
	Problems int `json:"problems"`
}

// Problem is one thing that is wrong or that will break a start or a live
// migration, with one line of advice.
type Problem struct {
	Code    string `json:"code"`
	Domain  string `json:"domain,omitempty"`
	UUID    string `json:"uuid,omitempty"`
	VG      string `json:"vg,omitempty"`
	LV      string `json:"lv,omitempty"`
	Message string `json:"message"`
	Advice  string `json:"advice"`
	// also lists the UUIDs of the domains the problem counts on besides
	// UUID's (a host that stopped renewing holds their LVs); finish counts
	// it in their DomainReport.Problems.
	also []string
}

// Lockspace states of a VG on this host.
const (
	LockspaceStarted     = "started"
	LockspaceNotStarted  = "not-started"
	LockspaceNoLvmlockd  = "lvmlockd-not-running"
	LockspaceLocal       = "local"   // not a shared VG: no lockspace
	LockspaceVGMissing   = "missing" // lvm does not know the VG here
	LockspaceUnknownKind = "unknown"
)

// LockspaceReport is one VG used by the checked domains.
type LockspaceReport struct {
	VG       string `json:"vg"`
	Shared   bool   `json:"shared"`
	LockType string `json:"lock_type,omitempty"`
	State    string `json:"state"`
	// Hosts are the hosts of its sanlock lockspace, when sanlock was read;
	// HostsError says why they are missing when reading failed.
	Hosts      []LockspaceHost `json:"hosts,omitempty"`
	HostsError string          `json:"hosts_error,omitempty"`
}

// DomainReport is one domain.
type DomainReport struct {
	Name   string `json:"name"`
	UUID   string `json:"uuid"`
	State  string `json:"state"`
	Active bool   `json:"active"`
	// Job: none, migration-out, migration-in or other.
	Job Job `json:"job"`
	// Managed is false for a domain that opted out of lvhook (its LVs are
	// then not listed) or whose XML could not be read.
	Managed bool       `json:"managed"`
	LVs     []LVReport `json:"lvs"`
	// Problems counts the problems of this domain and its LVs.
	Problems int `json:"problems"`
}

// LVReport is one LV of a domain.
type LVReport struct {
	VG   string `json:"vg"`
	LV   string `json:"lv"`
	Disk string `json:"disk"`
	// Need is the mode the disk needs while the domain runs without a
	// migration: ex, or sh for shareable, read-only and backing disks.
	Need lvmlock.Mode `json:"need"`
	// Expected is the lock this host should hold now: need while running,
	// sh during a migration job, none when the domain is not running here.
	Expected string `json:"expected"`
	// Actual is what this host holds: none, sh, ex, or "unlocked" for an
	// LV active without an lvmlockd lock.
	Actual    string `json:"actual"`
	Segtype   string `json:"segtype,omitempty"`
	Lockspace string `json:"lockspace"`
	Others    Others `json:"others"`
	// Problems lists the codes of this LV's problems.
	Problems []string `json:"problems"`
}

// Others says whether other hosts hold the LV, and how that is known.
type Others struct {
	// Source: "exclusive-here" (an ex lock here excludes every other host),
	// "peers" (the peers' lock helpers answered), "sanlock" (the LV's lease
	// as sanlock wrote it, when the peers did not answer), or "unknown".
	Source  string   `json:"source"`
	Holders []Holder `json:"holders"`
	// Error says why they are unknown when a source failed.
	Error string `json:"error,omitempty"`
}

// Others sources.
const (
	OthersExclusiveHere = "exclusive-here"
	OthersPeers         = "peers"
	OthersSanlock       = "sanlock"
	OthersUnknown       = "unknown"
)

// actualUnlocked is an LV active here without an lvmlockd lock.
const actualUnlocked = "unlocked"

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
// host when names is empty. An error means nothing could be checked.
func (c *Checker) Check(ctx context.Context, names []string) (*Report, error) {
	listed, err := c.Libvirt.Domains(ctx)
	if err != nil {
		return nil, fmt.Errorf("list libvirt domains: %w", err)
	}
	selected, err := selectDomains(listed, names)
	if err != nil {
		return nil, err
	}
	inputs := c.readDomains(ctx, selected)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("read libvirt domains: %w", err)
	}

	rep := &Report{Version: Version, Host: c.Host, CheckedAt: c.now().UTC(),
		Problems: []Problem{}, Lockspaces: []LockspaceReport{}, Domains: []DomainReport{}}
	var refs []lvmlock.Ref
	for _, in := range inputs {
		if in.err == nil && !in.dom.OptedOut {
			refs = append(refs, in.dom.Refs()...)
		}
	}
	records, pending, err := c.records()
	if err != nil {
		return nil, err
	}
	if len(names) > 0 {
		pending = slices.DeleteFunc(pending, func(r state.Record) bool {
			return !slices.ContainsFunc(selected, func(d virt.Listed) bool { return strings.EqualFold(d.UUID, r.UUID) })
		})
	}
	for _, r := range pending {
		for _, l := range r.LVs {
			refs = append(refs, l.Ref())
		}
	}
	st, lockErr, err := c.lvmState(ctx, lvmlock.VGsOf(refs))
	if err != nil {
		return nil, err
	}
	ev := &evaluation{Checker: c, st: st, lockErr: lockErr, rep: rep,
		hostNeed: hostNeeds(listed, inputs, records), records: records, vgs: map[string]lvmlock.LV{},
		spaces: map[string]lvmlock.SanlockLockspace{}, hosts: map[string]map[int]lvmlock.SanlockHost{},
		sanlockErr: map[string]string{}}
	for r, lv := range st.LVs {
		ev.vgs[r.VG] = lv
	}
	ev.readSanlock(ctx, lvmlock.VGsOf(refs))
	for _, in := range inputs {
		ev.domain(in)
	}
	ev.others(ctx)
	ev.hostProblems()
	ev.pending(pending)
	ev.helperProblems(selected, len(names) == 0)
	ev.lockspaces()
	ev.finish()
	return rep, nil
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

// hostNeeds maps each LV to the strongest mode the domains active on this
// host need: from the XML of the checked ones, from lvhook's records for the
// others. An LV in it is in use here whichever domain is being looked at.
func hostNeeds(listed []virt.Listed, inputs []*domainInput, records map[string]state.Record) map[lvmlock.Ref]lvmlock.Mode {
	need := map[lvmlock.Ref]lvmlock.Mode{}
	add := func(r lvmlock.Ref, m lvmlock.Mode) {
		if need[r] != lvmlock.ModeEx {
			need[r] = m
		}
	}
	checked := map[string]bool{}
	for _, in := range inputs {
		if in.err != nil || !in.lib.Active() {
			continue
		}
		checked[in.lib.UUID] = true
		for _, d := range in.dom.Disks {
			m := d.Mode
			if migrating(in.job) {
				m = lvmlock.ModeSh
			}
			add(d.Ref, m)
		}
	}
	for _, d := range listed {
		if !d.Active() || checked[d.UUID] {
			continue
		}
		for _, l := range records[strings.ToLower(d.UUID)].LVs {
			add(l.Ref(), cmp.Or(l.Mode, lvmlock.ModeSh))
		}
	}
	return need
}

func migrating(j Job) bool { return j == JobMigrationOut || j == JobMigrationIn }

// evaluation builds a Report from what was read.
type evaluation struct {
	*Checker
	st       *lvmlock.State
	lockErr  error
	rep      *Report
	hostNeed map[lvmlock.Ref]lvmlock.Mode
	records  map[string]state.Record
	// vgs holds one LV of each VG lvs reported, for the VG's lock type.
	vgs map[string]lvmlock.LV
	// lvs points at every LVReport, for filling in other holders.
	lvs []lvPlace
	// From sanlock, by VG: this host's lockspace, its hosts, or why they
	// could not be read.
	spaces     map[string]lvmlock.SanlockLockspace
	hosts      map[string]map[int]lvmlock.SanlockHost
	sanlockErr map[string]string
}

type lvPlace struct {
	dom, lv int
	active  bool // the domain is active here without a migration job
}

func (ev *evaluation) add(p Problem) { ev.rep.Problems = append(ev.rep.Problems, p) }

func (ev *evaluation) lockspaceOf(vg string) string {
	switch {
	case slices.Contains(ev.st.MissingVGs, vg):
		return LockspaceVGMissing
	case !ev.vgShared(vg):
		if ev.vgKnown(vg) {
			return LockspaceLocal
		}
		return LockspaceUnknownKind
	case ev.lockErr != nil:
		return LockspaceNoLvmlockd
	case ev.st.Locks.Started(vg):
		return LockspaceStarted
	}
	return LockspaceNotStarted
}

func (ev *evaluation) vgShared(vg string) bool { return ev.vgs[vg].Shared() }

func (ev *evaluation) vgKnown(vg string) bool { _, ok := ev.vgs[vg]; return ok }

// lockspaces lists the VGs of the reported LVs and reports the lockspace
// problems, once per VG.
func (ev *evaluation) lockspaces() {
	var refs []lvmlock.Ref
	for _, d := range ev.rep.Domains {
		for _, l := range d.LVs {
			refs = append(refs, lvmlock.Ref{VG: l.VG, LV: l.LV})
		}
	}
	for _, p := range ev.rep.Problems {
		if p.Code == ProblemPendingDeactivation {
			refs = append(refs, lvmlock.Ref{VG: p.VG, LV: p.LV})
		}
	}
	reportedLvmlockd := false
	for _, vg := range lvmlock.VGsOf(refs) {
		ls := LockspaceReport{VG: vg, State: ev.lockspaceOf(vg), Shared: ev.vgShared(vg), LockType: ev.vgs[vg].LockType,
			Hosts: ev.lockspaceHosts(vg), HostsError: ev.sanlockErr[vg]}
		ev.rep.Lockspaces = append(ev.rep.Lockspaces, ls)
		switch ls.State {
		case LockspaceNotStarted:
			ev.add(Problem{Code: ProblemLockspaceNotStarted, VG: vg,
				Message: fmt.Sprintf("the lockspace of shared VG %s is not started on this host: no LV of it can be activated here", vg),
				Advice:  fmt.Sprintf("run `vgchange --lock-start %s`, then check that `lvmlockctl -i` lists `VG %s lock_type=...`", vg, vg)})
		case LockspaceNoLvmlockd:
			if !reportedLvmlockd {
				reportedLvmlockd = true
				ev.add(Problem{Code: ProblemLvmlockdNotRunning,
					Message: "lvmlockd is not running on this host: no LV of a shared VG can be activated or checked here",
					Advice:  "run `systemctl start lvmlockd`, then `vgchange --lock-start`"})
			}
		}
	}
}

// domain evaluates one domain and its LVs.
func (ev *evaluation) domain(in *domainInput) {
	d := in.lib
	dr := DomainReport{Name: d.Name, UUID: strings.ToLower(d.UUID), State: d.StateName, Active: d.Active(),
		Job: cmp.Or(in.job, jobNoneName), Managed: true, LVs: []LVReport{}}
	defer func() { ev.rep.Domains = append(ev.rep.Domains, dr) }()
	if in.err != nil {
		dr.Managed = false
		verb := "its lock state cannot be checked"
		if !d.Active() {
			verb = "the hook would refuse to start it"
		}
		msg := strings.TrimPrefix(lvmlock.OneLine(in.err.Error()), "domain "+d.Name+": ")
		ev.add(Problem{Code: ProblemDomainUnreadable, Domain: d.Name, UUID: dr.UUID,
			Message: fmt.Sprintf("%s: %s", msg, verb),
			Advice:  "fix the domain definition (virsh edit " + d.Name + ") or the storage pool it names"})
		return
	}
	if in.dom.OptedOut {
		dr.Managed = false
		return
	}
	for _, disk := range in.dom.Disks {
		lr, ok := ev.lv(in, disk)
		if !ok {
			continue
		}
		dr.LVs = append(dr.LVs, lr)
		ev.lvs = append(ev.lvs, lvPlace{dom: len(ev.rep.Domains), lv: len(dr.LVs) - 1,
			active: d.Active() && !migrating(in.job)})
	}
}

// lv evaluates one LV of a domain; ok is false for a disk that is not an LV.
func (ev *evaluation) lv(in *domainInput, disk domxml.Disk) (LVReport, bool) {
	d, ref := in.lib, disk.Ref
	lr := LVReport{VG: ref.VG, LV: ref.LV, Disk: disk.Target, Need: disk.Mode, Expected: "none",
		Actual: "none", Lockspace: ev.lockspaceOf(ref.VG), Others: Others{Source: OthersUnknown, Holders: []Holder{}},
		Problems: []string{}}
	problem := func(code, msg, advice string) {
		lr.Problems = append(lr.Problems, code)
		ev.add(Problem{Code: code, Domain: d.Name, UUID: strings.ToLower(d.UUID), VG: ref.VG, LV: ref.LV, Message: msg, Advice: advice})
	}
	switch {
	case d.Active() && migrating(in.job):
		lr.Expected = string(lvmlock.ModeSh)
	case d.Active():
		lr.Expected = string(disk.Mode)
	}
	if lr.Lockspace == LockspaceVGMissing {
		if strings.HasPrefix(disk.Path, "/dev/") && ev.pathExists(disk.Path) {
			return lr, false // some other device that looks like /dev/VG/LV
		}
		problem(ProblemVGMissing, fmt.Sprintf("disk %s: volume group %s is not known to lvm on this host (source %s)", disk.Target, ref.VG, disk.Path),
			fmt.Sprintf("check that the shared storage is visible here (`pvs`, `vgs %s`, multipath) or fix the disk source", ref.VG))
		return lr, true
	}
	lv, ok := ev.st.LVs[ref]
	if !ok {
		problem(ProblemLVMissing, fmt.Sprintf("disk %s: LV %s does not exist (source %s)", disk.Target, ref, disk.Path),
			fmt.Sprintf("create the LV or fix the disk source (virsh edit %s); `lvs %s` lists the VG's LVs", d.Name, ref.VG))
		return lr, true
	}
	lr.Segtype = lv.Segtype
	if !lv.Shared() {
		if lv.Active {
			lr.Actual = string(lvmlock.ModeEx)
		}
		problem(ProblemVGNotShared, fmt.Sprintf("%s is in VG %s, which is not shared (no lvmlockd lock): nothing stops a second start of %s on another host", ref, ref.VG, d.Name),
			fmt.Sprintf("if VG %s is on shared storage, make it shared: `vgchange --lock-type sanlock %s` with every LV inactive on every host", ref.VG, ref.VG))
		return lr, true
	}
	if why := lv.SharedActivationProblem(); why != "" {
		if disk.Mode == lvmlock.ModeSh {
			problem(ProblemSharedUnsupported, fmt.Sprintf("%s is %s, which lvmlockd cannot activate shared, yet disk %s of %s needs it shared: the domain cannot start", ref, why, disk.Target, d.Name),
				"make the disk exclusive (drop <shareable/> or <readonly/>) or move the data to a linear LV")
		} else {
			problem(ProblemSharedUnsupported, fmt.Sprintf("%s is %s, which lvmlockd cannot activate shared: %s cannot be live-migrated", ref, why, d.Name),
				"migrate it offline (shut down here, start on the other host), or move the data to a linear LV")
		}
	}
	if lr.Lockspace != LockspaceStarted {
		// Without lvmlockd's view the lock mode is unknown; the lockspace
		// problem is reported once for the VG, and named on each LV.
		if lv.Active {
			lr.Actual = "unknown"
		}
		code := ProblemLockspaceNotStarted
		if lr.Lockspace == LockspaceNoLvmlockd {
			code = ProblemLvmlockdNotRunning
		}
		lr.Problems = append(lr.Problems, code)
		return lr, true
	}
	lr.Actual = string(ev.st.Locks.Mode(ref.VG, lv.UUID))
	switch {
	case !lv.Active:
		lr.Actual = "none"
	case lr.Actual == "":
		lr.Actual = actualUnlocked
	}
	if lr.Actual == string(lvmlock.ModeEx) {
		lr.Others.Source = OthersExclusiveHere
	}

	hostNeed := ev.hostNeed[ref]
	rec := ev.records[strings.ToLower(d.UUID)]
	switch {
	case lr.Actual == actualUnlocked:
		fix := fmt.Sprintf("`lvchange -an %s` if no domain here uses it", ref)
		if hostNeed != lvmlock.ModeNone {
			fix = fmt.Sprintf("`lvchange %s %s` takes the lock (refused if another host holds it: then stop the domain on one of them)", activateFlag(hostNeed), ref)
		}
		problem(ProblemActiveUnlocked, fmt.Sprintf("%s is active here without an lvmlockd lock (activated with --nolocking, --lockopt skiplv or before lvmlockd started): nothing stops another host from activating it", ref),
			fix)
	case !d.Active() && hostNeed == lvmlock.ModeNone && lr.Actual != "none":
		problem(ProblemStaleActivation, fmt.Sprintf("%s is active (%s) here, but %s is not running here and no running domain here uses it: no other host can start %s", ref, lr.Actual, d.Name, d.Name),
			fmt.Sprintf("check that nothing opens it (`dmsetup info -c %s`: open count 0), then `lvchange -an %s`", dmName(ref), ref))
	case !d.Active():
		// Not running here: inactive is right, and an LV another domain
		// here uses is that domain's business.
	case lr.Actual == "none":
		problem(ProblemNotLocked, fmt.Sprintf("%s runs here but %s is not active here: its disk is unprotected or the domain uses a stale path", d.Name, ref),
			fmt.Sprintf("`lvchange %s %s` takes the lock; if it is refused, find the host that holds it (`lvhook check %s` there)", activateFlag(lvmlock.Mode(lr.Expected)), ref, d.Name))
	case migrating(in.job):
		// sh is the target; ex is fine until the destination asks for it.
	case lr.Actual == string(lvmlock.ModeSh) && lr.Expected == string(lvmlock.ModeEx):
		why := "a live migration or a cancelled one left it shared"
		if rec.Incoming {
			why = d.Name + " arrived by live migration and the lock helper has not yet made it exclusive"
		}
		problem(ProblemSharedAfterMigrate, fmt.Sprintf("%s holds %s shared, not exclusive (%s): another host could activate it shared", d.Name, ref, why),
			fmt.Sprintf("the lock helper converts it once the other host drops its sh (`systemctl status lvhook` here and on the source); by hand: `lvchange -aey %s`", ref))
	case lr.Actual == string(lvmlock.ModeEx) && lr.Expected == string(lvmlock.ModeSh) && hostNeed == lvmlock.ModeSh:
		problem(ProblemModeMismatch, fmt.Sprintf("%s is held exclusive here but %s needs it only shared: another host cannot share it", ref, d.Name),
			fmt.Sprintf("`lvchange -asy %s` converts it in place", ref))
	}
	return lr, true
}

// others fills in the other holders of every LV not held ex here, with one
// question to the HolderSource, or when it is unset or does not answer, one
// read of the LV leases per VG from sanlock; and reports conflicts. What
// cannot be read (a peer down, the check's time up) stays unknown, with why.
func (ev *evaluation) others(ctx context.Context) {
	var refs []lvmlock.Ref
	for _, p := range ev.lvs {
		lr := &ev.rep.Domains[p.dom].LVs[p.lv]
		ref := lvmlock.Ref{VG: lr.VG, LV: lr.LV}
		if lr.Others.Source == OthersUnknown && lr.Lockspace == LockspaceStarted && !slices.Contains(refs, ref) {
			refs = append(refs, ref)
		}
	}
	if len(refs) == 0 {
		return
	}
	// Why the others stay unknown, when they do: by VG, or for all.
	why, whyVG := "", map[string]string{}
	source, holders, err := OthersPeers, map[lvmlock.Ref][]Holder(nil), error(nil)
	if ev.Holders != nil {
		var answered map[lvmlock.Ref][]peer.Holder
		if answered, err = ev.Holders.Holders(ctx, refs); err != nil {
			why = "peers: " + lvmlock.OneLine(err.Error())
		}
		holders = map[lvmlock.Ref][]Holder{}
		for ref, hs := range answered {
			for _, h := range hs {
				holders[ref] = append(holders[ref], Holder{Host: h.Host, Mode: h.Mode})
			}
		}
	}
	if (ev.Holders == nil || err != nil) && len(ev.spaces) > 0 {
		source = OthersSanlock
		holders, whyVG = ev.leaseHolders(ctx, refs)
	} else if err != nil {
		holders = nil
	}
	for _, p := range ev.lvs {
		dr := &ev.rep.Domains[p.dom]
		lr := &dr.LVs[p.lv]
		ref := lvmlock.Ref{VG: lr.VG, LV: lr.LV}
		hs, known := holders[ref]
		if lr.Others.Source != OthersUnknown || !slices.Contains(refs, ref) {
			continue
		}
		if holders == nil || source == OthersSanlock && !known {
			var reasons []string
			for _, r := range []string{why, cmp.Or(whyVG[ref.VG], ev.sanlockErr[ref.VG])} {
				if r != "" {
					reasons = append(reasons, r)
				}
			}
			lr.Others.Error = strings.Join(reasons, "; ")
			continue
		}
		lr.Others = Others{Source: source, Holders: slices.Clone(hs)}
		if lr.Others.Holders == nil {
			lr.Others.Holders = []Holder{}
		}
		if !p.active || len(lr.Others.Holders) == 0 {
			continue
		}
		held := lr.Need == lvmlock.ModeEx
		for _, h := range lr.Others.Holders {
			held = held || h.Mode == lvmlock.ModeEx
		}
		if held {
			lr.Problems = append(lr.Problems, ProblemHeldElsewhere)
			ev.add(Problem{Code: ProblemHeldElsewhere, Domain: dr.Name, UUID: dr.UUID, VG: lr.VG, LV: lr.LV,
				Message: fmt.Sprintf("%s runs here and %s is also active on %s: either a second copy of %s runs there or its deactivation there failed", dr.Name, ref, holderList(lr.Others.Holders), dr.Name),
				Advice:  fmt.Sprintf("run `lvhook check %s` on %s: if %s is not running there, `lvchange -an %s` there; if it is, one copy must be stopped", dr.Name, lr.Others.Holders[0].Host, dr.Name, ref)})
		}
	}
}

// pending reports the deactivations the hook could not finish and that
// are still not done: the LV is active here and no running domain uses it.
func (ev *evaluation) pending(recs []state.Record) {
	for _, rec := range recs {
		for _, l := range rec.LVs {
			ref := l.Ref()
			if lv, ok := ev.st.LVs[ref]; ok && !lv.Active || ev.hostNeed[ref] != lvmlock.ModeNone {
				continue // done since, or in use again
			}
			since := rec.Since.UTC().Format(time.RFC3339)
			if j := slices.IndexFunc(ev.rep.Problems, func(p Problem) bool {
				return p.Code == ProblemStaleActivation && p.UUID == rec.UUID && p.VG == ref.VG && p.LV == ref.LV
			}); j >= 0 {
				// One problem per LV: the stale activation is this one.
				ev.rep.Problems[j].Message += fmt.Sprintf(" (its deactivation failed at %s; the lock helper retries)", since)
				continue
			}
			ev.add(Problem{Code: ProblemPendingDeactivation, Domain: rec.Name, UUID: rec.UUID, VG: ref.VG, LV: ref.LV,
				Message: fmt.Sprintf("%s is still active here: its deactivation failed when %s stopped (recorded %s)", ref, rec.Name, since),
				Advice:  fmt.Sprintf("the lock helper retries (`systemctl status lvhook`, `journalctl -t lvhook`); once nothing opens it: `lvchange -an %s`", ref)})
		}
	}
}

// ConfigInvalidReport is the report of a check that could not start: the
// config file cannot be used (err, a *ConfigError, names the file and the
// key).
func ConfigInvalidReport(host string, now time.Time, err error) *Report {
	ev := &evaluation{rep: &Report{Version: Version, Host: host, CheckedAt: now.UTC(),
		Problems: []Problem{}, Lockspaces: []LockspaceReport{}, Domains: []DomainReport{}}}
	ev.add(Problem{Code: ProblemConfigInvalid, Message: lvmlock.OneLine(err.Error()) + "; nothing else was checked",
		Advice: "fix it (lvhook(8) and the package's commented /etc/lvhook/lvhook.toml describe every key); until then lvhook refuses every start and incoming migration here, leaves LVs active at stop, and the lock helper does not run"})
	ev.finish()
	return ev.rep
}

// finish sorts the problems worst first, counts them on their domains, and
// fills in the summary.
func (ev *evaluation) finish() {
	rep := ev.rep
	slices.SortStableFunc(rep.Problems, func(a, b Problem) int {
		return cmp.Or(cmp.Compare(rankOf(a.Code), rankOf(b.Code)),
			cmp.Compare(a.Domain, b.Domain), cmp.Compare(a.VG, b.VG), cmp.Compare(a.LV, b.LV))
	})
	dom := make(map[string]int, len(rep.Domains))
	for i, d := range rep.Domains {
		dom[d.UUID] = i
	}
	for _, p := range rep.Problems {
		for _, u := range append([]string{p.UUID}, p.also...) {
			if i, ok := dom[u]; ok && u != "" {
				rep.Domains[i].Problems++
			}
		}
	}
	rep.Summary = Summary{Domains: len(rep.Domains), Problems: len(rep.Problems)}
	for _, d := range rep.Domains {
		rep.Summary.LVs += len(d.LVs)
	}
	rep.Healthy = len(rep.Problems) == 0
}

// activateFlag is lvchange's flag that takes mode m.
func activateFlag(m lvmlock.Mode) string {
	if m == lvmlock.ModeSh {
		return "-asy"
	}
	return "-aey"
}

func holderList(hs []Holder) string {
	s := make([]string, len(hs))
	for i, h := range hs {
		s[i] = h.Host + " (" + h.Mode.String()
		if h.State != "" && h.State != lvmlock.HostLive {
			s[i] += ", " + string(h.State)
		}
		s[i] += ")"
	}
	return strings.Join(s, ", ")
}

// dmName is the device-mapper name of an LV: VG-LV with "-" doubled.
func dmName(r lvmlock.Ref) string {
	return strings.ReplaceAll(r.VG, "-", "--") + "-" + strings.ReplaceAll(r.LV, "-", "--")
}
