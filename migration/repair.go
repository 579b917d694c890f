package migration

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/state"
	"github.com/lvhook/lvhook/virt"
)

// What repairRunning may do with a domain.
const (
	repair     = iota
	changed    // its record changed since libvirt was asked: look again soon
	unrecorded // lvhook did not start it here: only report
)

// repairRunning converts the LVs of a domain running here from sh back to ex
// when no migration needs them shared any more. It never activates an LV and
// never downgrades one.
func (h *Helper) repairRunning(ctx context.Context, st *lvmlock.State, v *domView, seen uint64, act int) []state.Problem {
	log := h.Log.With().Str("domain", v.Name).Str("uuid", v.UUID).Logger()
	var probs []state.Problem
	var due []lvmlock.Target
	for _, d := range v.disks {
		info, ok := st.LVs[d.Ref]
		switch {
		case !ok && slices.Contains(st.MissingVGs, d.VG):
			continue // not an LV, or a VG this host does not see: the hook judged it at start
		case !ok:
			probs = append(probs, state.Problem{VG: d.VG, LV: d.LV, What: "LV not found"})
			continue
		case !info.Shared():
			continue
		}
		switch mode := st.Mode(d.Ref); {
		case mode == lvmlock.ModeNone:
			probs = append(probs, state.Problem{VG: d.VG, LV: d.LV, What: fmt.Sprintf(
				"not active here although %s runs here; lvhook activates an LV only when libvirt starts or receives the domain", v.Name)})
		case mode == lvmlock.ModeSh && d.Mode == lvmlock.ModeEx:
			due = append(due, lvmlock.Target{Ref: d.Ref, Mode: lvmlock.ModeEx})
		}
	}
	switch {
	case act == changed:
		log.Info().Msg("started or stopped while being reconciled: looked at again later")
		h.schedule(v, false)
		return nil
	case act == unrecorded && len(due)+len(probs) > 0:
		return append(probs, state.Problem{What: "lvhook has no record of this domain here (started before lvhook was installed?): its LVs are not repaired"})
	case act == unrecorded:
		return nil
	case len(due) == 0:
		h.mu.Lock()
		delete(h.due, v.UUID)
		h.mu.Unlock()
		if v.job.Kind == virt.JobNone || v.job.Kind == virt.JobOther {
			h.finishIncoming(log, v.UUID)
		}
		return probs
	}
	switch v.job.Kind {
	case virt.JobMigrationOut, virt.JobUnknown:
		// sh is right while the domain migrates away (or may). A domain
		// handed over from here is looked at again until its job ends:
		// a cancel before the guest was paused sends no event here.
		h.mu.Lock()
		_, watched := h.grants[v.UUID]
		if !watched {
			delete(h.due, v.UUID)
		}
		h.mu.Unlock()
		if watched {
			h.schedule(v, false)
		}
		return probs
	case virt.JobMigrationIn:
		// The incoming migration still runs; once the guest is resumed
		// here only libvirt's Finish is left: look again soon.
		if v.state == virt.StateRunning {
			h.schedule(v, false)
		}
		return probs
	}
	h.mu.Lock()
	stale := h.downgradedAt[v.UUID] > seen
	h.mu.Unlock()
	if stale {
		log.Info().Msg("downgraded for a migration while being reconciled: looked at again later")
		h.schedule(v, false)
		return probs
	}
	lvm := *h.LVM
	lvm.Log = log
	// Convert, not Activate: a partial failure keeps the LVs that became
	// ex (rolling them back would drop ex to sh with no migration).
	if _, err := lvm.Convert(ctx, st, due); err != nil {
		return append(probs, h.notYetExclusive(log, v, due, err)...)
	}
	h.mu.Lock()
	d := h.due[v.UUID]
	delete(h.due, v.UUID)
	h.mu.Unlock()
	since := h.now()
	if d != nil {
		for _, t := range []time.Time{d.since, d.event} {
			if !t.IsZero() && t.Before(since) {
				since = t
			}
		}
	}
	log.Info().Str("lvs", lvmlock.JoinRefs(lvmlock.RefsOf(due))).Str("from", "sh").Str("to", "ex").
		Dur("took", h.now().Sub(since)).Msg("exclusive again")
	h.finishIncoming(log, v.UUID)
	return probs
}

// notYetExclusive schedules the next sh->ex try of a domain and, once
// exclusive_timeout has passed, reports its LVs as stuck (once in the log, and
// in the problems file for lvhook check).
func (h *Helper) notYetExclusive(log zerolog.Logger, v *domView, due []lvmlock.Target, err error) []state.Problem {
	d := h.schedule(v, true)
	held := h.now().Sub(d.since)
	if held < h.Config.Daemon.ExclusiveTimeout.D() {
		log.Info().Err(err).Str("lvs", lvmlock.JoinRefs(lvmlock.RefsOf(due))).Msg("exclusive lock not yet available; retrying")
		return nil
	}
	var probs []state.Problem
	for _, t := range due {
		probs = append(probs, state.Problem{VG: t.VG, LV: t.LV, What: fmt.Sprintf(
			"still shared since %s although no migration needs it (%v); another host still holds it shared",
			d.since.UTC().Format(time.RFC3339), lvmlock.Reason(err))})
	}
	h.mu.Lock()
	report := !d.reported
	d.reported = true
	h.mu.Unlock()
	if report {
		log.Error().Err(err).Str("lvs", lvmlock.JoinRefs(lvmlock.RefsOf(due))).Dur("took", held).
			Msg("LVs still shared past exclusive_timeout")
	}
	return probs
}

// schedule plans the next look at v; counted retries (ex due, conversion
// refused) start the exclusive_timeout clock.
func (h *Helper) schedule(v *domView, counted bool) *dueDomain {
	h.mu.Lock()
	defer h.mu.Unlock()
	d := h.dueLocked(v.UUID, v.Name)
	now := h.now()
	if counted && d.since.IsZero() {
		d.since = now
		if !d.event.IsZero() && d.event.Before(now) {
			d.since = d.event
		}
	}
	switch {
	case counted && now.Sub(d.since) >= h.Config.Daemon.ExclusiveTimeout.D():
		d.delay = h.Config.Daemon.ReconcileInterval.D()
	case d.delay == 0:
		d.delay = retryMin
	default:
		d.delay = min(2*d.delay, retryMax)
	}
	d.next = now.Add(d.delay)
	return d
}

func (h *Helper) dueLocked(uuid, name string) *dueDomain {
	if h.due == nil {
		h.due = map[string]*dueDomain{}
	}
	d := h.due[uuid]
	if d == nil {
		d = &dueDomain{name: name}
		h.due[uuid] = d
	}
	return d
}

// finishIncoming clears the Incoming flag of a domain's record once its LVs
// are ex here (the hook sets it on a migration's destination).
func (h *Helper) finishIncoming(log zerolog.Logger, uuid string) {
	rec, ok, err := h.State.Load(state.DomainsDir, uuid)
	if err != nil || !ok || !rec.Incoming {
		return
	}
	rec.Incoming = false
	if err := h.State.Save(state.DomainsDir, rec); err != nil {
		log.Warn().Err(err).Msg("cannot update domain record")
		return
	}
	log.Info().Msg("incoming migration complete")
}

// retryPending deactivates the LVs a failed release left active. An LV that
// a domain running (or starting) here uses is dropped from the record: that
// domain's own release deactivates it. One of a killed VG stays in the
// record untouched until the VG is recovered (killed.go).
func (h *Helper) retryPending(ctx context.Context, st *lvmlock.State, p state.Record, used map[lvmlock.Ref]string, killed map[string]state.Killed) []state.Problem {
	log := h.Log.With().Str("domain", p.Name).Str("uuid", p.UUID).Logger()
	var off []lvmlock.Ref
	var left []state.RecordLV
	for _, l := range p.LVs {
		ref := l.Ref()
		info, ok := st.LVs[ref]
		_, dead := killed[ref.VG]
		switch {
		case dead:
			left = append(left, l)
		case used[ref] != "":
			log.Info().Str("vg", ref.VG).Str("lv", ref.LV).Str("used_by", used[ref]).Msg("used by a domain here: left to its release")
		case !ok || !info.Shared() || st.Mode(ref) == lvmlock.ModeNone:
		default:
			off = append(off, ref)
		}
	}
	lvm := *h.LVM
	lvm.Log = log
	done, err := lvm.Deactivate(ctx, st, off)
	var probs []state.Problem
	for _, ref := range off {
		if !slices.ContainsFunc(done, func(c lvmlock.Change) bool { return c.Ref == ref }) {
			left = append(left, state.RecordLV{VG: ref.VG, LV: ref.LV})
			probs = append(probs, state.Problem{VG: ref.VG, LV: ref.LV, What: fmt.Sprintf(
				"left active after %s stopped here (%v); lvhook retries the deactivation", p.Name, lvmlock.Reason(err))})
		}
	}
	if len(left) == 0 {
		if err := h.State.Remove(state.PendingDir, p.UUID); err != nil {
			log.Warn().Err(err).Msg("cannot remove pending record")
		}
		log.Info().Msg("pending deactivation done")
		return nil
	}
	if len(left) != len(p.LVs) {
		p.LVs = left
		if err := h.State.Save(state.PendingDir, p); err != nil {
			log.Warn().Err(err).Msg("cannot save pending record")
		}
	}
	if len(probs) > 0 {
		log.Warn().Err(err).Str("lvs", lvmlock.JoinRefs(recordRefs(left))).Msg("deactivation failed again")
	}
	return probs
}

func recordRefs(lvs []state.RecordLV) []lvmlock.Ref {
	refs := make([]lvmlock.Ref, len(lvs))
	for i, l := range lvs {
		refs[i] = l.Ref()
	}
	return refs
}
