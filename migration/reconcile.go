package migration

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/lvhook/lvhook/domxml"
	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/state"
	"github.com/lvhook/lvhook/virt"
)

// Pace of the sh->ex retries after a migration: the source's release end
// usually drops its sh within seconds of the destination's resume.
const (
	retryMin = 250 * time.Millisecond
	retryMax = 5 * time.Second
)

// dueDomain is a domain whose LVs should be ex here but are still sh.
type dueDomain struct {
	name  string
	next  time.Time
	delay time.Duration
	// event is when RESUMED_MIGRATED arrived, since when the first try
	// to go ex failed: the time to ex is measured from the earlier.
	event, since time.Time
	reported     bool
}

// domView is what libvirt says of one domain running here, with lvhook's
// record of it as it was when libvirt was asked.
type domView struct {
	virt.Domain
	state    virt.DomainState
	job      virt.Job
	disks    []domxml.Disk
	rec      state.Record
	recorded bool
}

// ReconcileAll compares every domain running here with its LVs' lock modes
// and repairs what is due, then retries the deactivations that failed.
func (h *Helper) ReconcileAll(ctx context.Context) { h.reconcile(ctx, nil) }

// HandleEvent reacts to a lifecycle event: the domain is reconciled at once.
// RESUMED_MIGRATED starts the sh->ex retries (destination after a migration,
// source after a cancelled one).
func (h *Helper) HandleEvent(ctx context.Context, ev virt.Event) {
	h.Log.Info().Str("domain", ev.Name).Str("uuid", ev.UUID).Stringer("event", ev.Kind).Msg("lifecycle event")
	if ev.Kind == virt.EventResumedMigrated {
		h.mu.Lock()
		d := h.dueLocked(ev.UUID, ev.Name)
		d.event, d.delay, d.since, d.reported = h.now(), 0, time.Time{}, false
		h.mu.Unlock()
	}
	h.reconcile(ctx, []string{ev.UUID})
}

// Tick runs what is due now: the periodic full pass every
// ReconcileInterval, and the retries of domains waiting for ex.
func (h *Helper) Tick(ctx context.Context) {
	now := h.now()
	h.mu.Lock()
	full := h.lastPass.IsZero() || now.Sub(h.lastPass) >= h.Config.Daemon.ReconcileInterval.D()
	var uuids []string
	for u, d := range h.due {
		if !d.next.IsZero() && !d.next.After(now) {
			uuids = append(uuids, u)
		}
	}
	h.mu.Unlock()
	switch {
	case full:
		h.reconcile(ctx, nil)
	case len(uuids) > 0:
		slices.Sort(uuids)
		h.reconcile(ctx, uuids)
	}
}

// NextWake is when Tick has something to do.
func (h *Helper) NextWake() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	next := h.lastPass.Add(h.Config.Daemon.ReconcileInterval.D())
	for _, d := range h.due {
		if !d.next.IsZero() && d.next.Before(next) {
			next = d.next
		}
	}
	return next
}

// reconcile examines the domains in only (every domain when nil). libvirt is
// asked first, without the host lock: libvirtd may be running a hook of the
// same domain, and that hook waits for the lock.
func (h *Helper) reconcile(ctx context.Context, only []string) {
	full := only == nil
	if full {
		h.mu.Lock()
		h.lastPass = h.now()
		h.mu.Unlock()
	}
	lv := h.libvirt()
	if lv == nil {
		h.Log.Debug().Msg("not connected to libvirt: nothing reconciled")
		return
	}
	h.mu.Lock()
	seen := h.downgrades
	h.mu.Unlock()
	wanted := func(uuid string) bool { return full || slices.Contains(only, uuid) }

	active, err := lv.ActiveDomains(ctx)
	if err != nil {
		h.Log.Warn().Err(err).Msg("cannot list domains: nothing reconciled")
		return
	}
	slices.SortFunc(active, func(a, b virt.Domain) int { return cmp.Compare(a.UUID, b.UUID) })
	running := map[string]bool{}
	var views []*domView
	problems := map[string][]state.Problem{}
	names := map[string]string{}
	for _, d := range active {
		if !wanted(d.UUID) {
			running[d.UUID] = true
			continue
		}
		v, err := h.view(ctx, lv, d)
		switch {
		case errors.Is(err, virt.ErrNoDomain):
			continue // gone since the list: its release deals with it
		case err != nil:
			running[d.UUID] = true
			names[d.UUID] = d.Name
			problems[d.UUID] = append(problems[d.UUID], state.Problem{What: fmt.Sprintf("cannot read from libvirt: %v", err)})
			h.Log.Warn().Err(err).Str("domain", d.Name).Str("uuid", d.UUID).Msg("cannot read domain from libvirt")
			continue
		}
		running[d.UUID] = true
		names[d.UUID] = d.Name
		views = append(views, v)
	}
	var pendings []state.Record
	recs, err := h.State.All(state.PendingDir)
	if err != nil {
		h.Log.Warn().Err(err).Msg("unreadable pending deactivation")
	}
	for _, p := range recs {
		if wanted(p.UUID) {
			pendings = append(pendings, p)
		}
	}
	h.mu.Lock()
	for u := range h.grants {
		if !running[u] && (full || slices.Contains(only, u)) {
			delete(h.grants, u)
		}
	}
	for _, v := range views {
		if v.job.Kind != virt.JobMigrationOut {
			delete(h.grants, v.UUID)
		}
	}
	h.mu.Unlock()
	if !full {
		// A domain examined and no longer running here needs no retry.
		h.mu.Lock()
		for _, u := range only {
			if !running[u] {
				delete(h.due, u)
			}
		}
		h.mu.Unlock()
	} else {
		h.mu.Lock()
		for u := range h.due {
			if !running[u] {
				delete(h.due, u)
			}
		}
		h.mu.Unlock()
	}

	if len(views) > 0 || len(pendings) > 0 || full {
		h.locked(ctx, views, pendings, running, seen, full, problems, names)
	}
	if ctx.Err() != nil {
		// Stopped midway (SIGTERM, the helper restarting): what it could
		// not read is no finding; the files stay as the last full look
		// left them.
		h.Log.Debug().Msg("reconciliation cut short: problems files left as they were")
		return
	}
	h.publish(only, problems, names)
}

// locked does the lvm part of a reconciliation under the host lock, so that
// no hook changes a lock between the state read and the repair.
func (h *Helper) locked(ctx context.Context, views []*domView, pendings []state.Record, running map[string]bool,
	seen uint64, full bool, problems map[string][]state.Problem, names map[string]string) {
	ctx, cancel := context.WithTimeout(ctx, h.Config.HookTimeout.D())
	defer cancel()
	unlock, err := h.State.Lock(ctx)
	if err != nil {
		h.Log.Warn().Err(err).Msg("cannot take the host lock: nothing reconciled")
		return
	}
	defer unlock()
	records, err := h.State.All(state.DomainsDir)
	if err != nil {
		h.Log.Warn().Err(err).Msg("unreadable domain record")
	}
	killed := h.killedVGs()
	var vgs []string
	for _, v := range views {
		v.disks = withoutKilled(v.disks, killed)
		for _, d := range v.disks {
			vgs = append(vgs, d.VG)
		}
	}
	for _, p := range pendings {
		for _, l := range p.LVs {
			if _, ok := killed[l.VG]; !ok {
				vgs = append(vgs, l.VG)
			}
		}
	}
	slices.Sort(vgs)
	vgs = slices.Compact(vgs)
	st := &lvmlock.State{LVs: map[lvmlock.Ref]lvmlock.LV{}, Locks: lvmlock.Locks{}}
	if len(vgs) > 0 {
		if st, err = h.LVM.State(ctx, true, vgs...); err != nil {
			h.Log.Error().Err(err).Msg("cannot read the lock state: nothing reconciled")
			return
		}
	}
	for _, v := range views {
		// The view is from before the lock: a hook may have stopped or
		// restarted the domain since. lvhook's record, which hooks write
		// under the lock, tells; a domain it did not start is not its to
		// repair.
		i := slices.IndexFunc(records, func(r state.Record) bool { return r.UUID == v.UUID })
		act := repair
		switch {
		case i < 0 && !v.recorded:
			act = unrecorded
		case i < 0 || !v.recorded || !records[i].Since.Equal(v.rec.Since):
			act = changed
		}
		problems[v.UUID] = append(problems[v.UUID], h.repairRunning(ctx, st, v, seen, act)...)
	}
	// LVs that domains running or starting here use, from lvhook's records
	// (libvirt's view may be stale by now).
	used := map[lvmlock.Ref]string{}
	for _, r := range records {
		for _, l := range r.LVs {
			used[l.Ref()] = r.Name
		}
	}
	for _, p := range pendings {
		if names[p.UUID] == "" {
			names[p.UUID] = p.Name
		}
		problems[p.UUID] = append(problems[p.UUID], h.retryPending(ctx, st, p, used, killed)...)
	}
	if !full {
		return
	}
	// A record of a domain libvirt does not list: a start in progress (QEMU
	// is listed once launched), or a stop no hook saw. Only report it.
	for _, r := range records {
		if running[r.UUID] || h.now().Sub(r.Since) < 2*h.Config.Daemon.ReconcileInterval.D() {
			continue
		}
		names[r.UUID] = r.Name
		problems[r.UUID] = append(problems[r.UUID], state.Problem{What: fmt.Sprintf(
			"recorded as running here since %s, but libvirt does not list it; its LVs stay as they are", r.Since.Format(time.RFC3339))})
	}
}

func (h *Helper) view(ctx context.Context, lv virt.Libvirt, d virt.Domain) (*domView, error) {
	ds, err := lv.DomainState(ctx, d.UUID)
	if err != nil {
		return nil, err
	}
	if ds == virt.StateShutoff {
		return nil, virt.ErrNoDomain
	}
	// Any other state is active, a crashed domain's too (QEMU is kept).
	job, err := lv.DomainJob(ctx, d.UUID)
	if err != nil {
		return nil, err
	}
	x, err := lv.DomainXML(ctx, d.UUID)
	if err != nil {
		return nil, err
	}
	dom, err := domxml.Parse(x, h.Config.StoragePoolDir)
	if err != nil {
		return nil, err
	}
	if dom.UUID != d.UUID {
		return nil, fmt.Errorf("libvirt returned the XML of %s for %s", dom.UUID, d.UUID)
	}
	v := &domView{Domain: virt.Domain{Name: dom.Name, UUID: d.UUID}, state: ds, job: job}
	if !dom.OptedOut {
		v.disks = dom.Disks
	}
	if v.rec, v.recorded, err = h.State.Load(state.DomainsDir, d.UUID); err != nil {
		return nil, err
	}
	return v, nil
}
