package hook

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/state"
)

// deactivate is release end: -an every LV of the domain (from its XML and
// from lvhook's record) that no other domain running here uses, but those
// of VGs killed here (killed.go).
func (r *run) deactivate(ctx context.Context) error {
	if err := r.State.ClearIncoming(r.dom.UUID); err != nil {
		r.log.Warn().Err(err).Msg("cannot clear incoming-migration marker")
	}
	refs, dead := splitKilled(r.stoppedRefs(), r.killedVGs(r.log))
	if len(dead) > 0 {
		r.log.Warn().Str("lvs", lvmlock.JoinRefs(dead)).
			Msg("VG killed on this host (lease storage lost): these LVs are left to `lvhook kill-vg --recover`")
	}
	if len(refs) == 0 {
		return errors.Join(r.State.Remove(state.PendingDir, r.dom.UUID), r.State.Remove(state.DomainsDir, r.dom.UUID))
	}
	inUse := r.usedByOthers()
	var off []lvmlock.Ref
	for _, ref := range refs {
		if u := inUse[ref]; u.domain != "" {
			r.log.Info().Str("vg", ref.VG).Str("lv", ref.LV).Str("used_by", u.domain).Msg("still used by another domain here: left active")
			continue
		}
		off = append(off, ref)
	}
	done, err := r.lvm.Deactivate(ctx, nil, off)
	if err != nil {
		var left []lvmlock.Ref
		for _, ref := range off {
			if !slices.ContainsFunc(done, func(c lvmlock.Change) bool { return c.Ref == ref }) {
				left = append(left, ref)
			}
		}
		r.savePending(left)
		return fmt.Errorf("%s stopped, but %s could not be deactivated (%s); the lock helper retries", r.dom.Name, lvmlock.JoinRefs(left), lvmlock.Reason(err))
	}
	if err := r.State.Remove(state.PendingDir, r.dom.UUID); err != nil {
		r.log.Warn().Err(err).Msg("cannot remove pending record")
	}
	return r.State.Remove(state.DomainsDir, r.dom.UUID)
}

type use struct {
	domain string
	mode   lvmlock.Mode
}

// usedByOthers maps each LV recorded for another domain running here to
// that domain and the mode it needs (ex wins when several use it).
func (r *run) usedByOthers() map[lvmlock.Ref]use {
	recs, err := r.State.All(state.DomainsDir)
	if err != nil {
		// One unreadable or stray file must not block every start and
		// stop on the host; lvhook check reports it.
		r.log.Warn().Err(err).Msg("unreadable domain record skipped")
	}
	used := map[lvmlock.Ref]use{}
	for _, rec := range recs {
		if rec.UUID == r.dom.UUID {
			continue
		}
		for _, l := range rec.LVs {
			if used[l.Ref()].mode != lvmlock.ModeEx {
				used[l.Ref()] = use{domain: rec.Name, mode: l.Mode}
			}
		}
	}
	return used
}

// leavePending hands every LV of the stopped domain (its XML's, its
// record's, a start's intent) to the lock helper as a pending deactivation,
// without the host lock: a file replaced by rename. libvirt runs no other
// hook of this domain meanwhile.
func (r *run) leavePending() {
	if refs := r.stoppedRefs(); len(refs) > 0 {
		r.savePending(refs)
	}
}

// stoppedRefs are the LVs a stop of the domain releases: its XML's (unless
// it opted out), its record's (detached while running, which no hook tells,
// or activated before it opted out) and a start's intent. An unreadable
// record is logged and the rest used.
func (r *run) stoppedRefs() []lvmlock.Ref {
	var refs []lvmlock.Ref
	if !r.dom.OptedOut {
		refs = r.dom.Refs()
	}
	for _, dir := range []string{state.DomainsDir, state.PendingDir} {
		rec, _, err := r.State.Load(dir, r.dom.UUID)
		if err != nil {
			r.log.Warn().Err(err).Str("dir", dir).Msg("record unreadable: the other sources of the domain's LVs are used")
		}
		for _, l := range rec.LVs {
			if !slices.Contains(refs, l.Ref()) {
				refs = append(refs, l.Ref())
			}
		}
	}
	return refs
}

func (r *run) savePending(refs []lvmlock.Ref) {
	rec := state.Record{Name: r.dom.Name, UUID: r.dom.UUID}
	for _, ref := range refs {
		rec.LVs = append(rec.LVs, state.RecordLV{VG: ref.VG, LV: ref.LV})
	}
	if err := r.State.Save(state.PendingDir, rec); err != nil {
		r.log.Error().Err(err).Msg("cannot save pending deactivation")
	}
	if err := r.State.Remove(state.DomainsDir, r.dom.UUID); err != nil {
		r.log.Warn().Err(err).Msg("cannot remove domain record")
	}
}
