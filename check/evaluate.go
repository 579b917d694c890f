package check

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/lvhook/lvhook/domxml"
	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/state"
	"github.com/lvhook/lvhook/virt"
)

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

// evaluation builds a Report from what was gathered, by rules alone: it
// reads nothing.
type evaluation struct {
	*gathered
	rep      *Report
	hostNeed map[lvmlock.Ref]lvmlock.Mode
	// lvs points at every LVReport, for filling in other holders.
	lvs []lvPlace
}

// evaluate applies check's rules to what g read.
func (g *gathered) evaluate() *Report {
	ev := &evaluation{gathered: g, hostNeed: hostNeeds(g.listed, g.inputs, g.records),
		rep: &Report{Version: Version, Host: g.Host, CheckedAt: g.checkedAt,
			Problems: []Problem{}, Lockspaces: []LockspaceReport{}, Domains: []DomainReport{}}}
	for _, in := range g.inputs {
		ev.domain(in)
	}
	ev.others()
	ev.killedVGs()
	ev.hostProblems()
	ev.pending(g.pending)
	ev.helperProblems()
	ev.refusedAutostarts()
	ev.lockspaces()
	ev.finish()
	return ev.rep
}

type lvPlace struct {
	dom, lv int
	active  bool // the domain is active here without a migration job
}

func (ev *evaluation) add(p Problem) { ev.rep.Problems = append(ev.rep.Problems, p) }

// refusedAutostarts reports the domains libvirt autostarted at boot and
// lvhook refused: nothing retries them.
func (ev *evaluation) refusedAutostarts() {
	for _, r := range ev.gathered.refusedAutostarts {
		ev.add(Problem{Code: ProblemAutostartRefused, Domain: r.dom.Name, UUID: strings.ToLower(r.dom.UUID),
			Message: fmt.Sprintf("%s is set to autostart but does not run: its start here was refused at %s: %s",
				r.dom.Name, r.rec.At.UTC().Format(time.RFC3339), r.rec.Line),
			Advice: fmt.Sprintf("libvirt tries an autostart once per boot; if %s runs on the host the line names, leave it there (or `virsh autostart --disable %s` here); else stop it there, then `virsh start %s` here",
				r.dom.Name, r.dom.Name, r.dom.Name)})
	}
}

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
		if ls.State == LockspaceKilled {
			ls.Shared, ls.LockType = true, "sanlock" // killed by lvmlockd: a sanlock VG
		}
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
	if lr.Lockspace == LockspaceKilled {
		// Reported once for the VG (killedVGs); lvm was not asked.
		if d.Active() {
			lr.Actual = "unknown"
		}
		lr.Problems = append(lr.Problems, ProblemVGKilled)
		return lr, true
	}
	if lr.Lockspace == LockspaceVGMissing {
		if ev.paths[disk.Path] {
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

// others fills in the other holders gathered for every LV not held ex here
// (readOthers), and reports conflicts. What could not be read stays unknown,
// with why.
func (ev *evaluation) others() {
	o := ev.gathered.others
	source, holders, refs, why, whyVG := o.source, o.holders, o.asked, o.why, o.whyVG
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
			if lv, ok := ev.st.LVs[ref]; ok && !lv.Active || ev.hostNeed[ref] != lvmlock.ModeNone || ev.killed.has(ref.VG) {
				continue // done since, in use again, or its VG killed (vg-killed)
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

// dmName is the device-mapper name of an LV: VG-LV with "-" doubled.
func dmName(r lvmlock.Ref) string {
	return strings.ReplaceAll(r.VG, "-", "--") + "-" + strings.ReplaceAll(r.LV, "-", "--")
}
