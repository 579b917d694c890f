package hook

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/state"
)

// A VG whose lease storage this host lost and `lvhook kill-vg` killed is
// left to `lvhook kill-vg --recover`: its LVs' devices have the error
// table, lvmlockd dropped (or refuses) their locks, and lvm would scan the
// lost storage. So the hook refuses to start a domain with an LV in it, and
// at a stop leaves its LVs alone: a destroy that kill-vg makes waits for
// this release, inside its bound. The records are read without the host
// lock, which a hook stuck in lvm may hold.

// killedVGs returns the VGs killed on this host; one whose record cannot be
// read counts as killed (state.KilledVGs).
func (h *Hook) killedVGs(log zerolog.Logger) map[string]state.Killed {
	killed, err := h.State.KilledVGs()
	if err != nil {
		log.Warn().Err(err).Msg("cannot read the kill records: no VG taken as killed")
	}
	return killed
}

// refuseKilled returns the refusal of a start whose LVs include one of a
// killed VG, or nil.
func (r *run) refuseKilled(verb string, refs []lvmlock.Ref) error {
	killed := r.killedVGs(r.log)
	for _, vg := range lvmlock.VGsOf(refs) {
		k, ok := killed[vg]
		if !ok {
			continue
		}
		when := "at an unknown time (its kill record is unreadable)"
		if !k.Started.IsZero() {
			when = "at " + k.Started.UTC().Format(time.RFC3339)
		}
		return fmt.Errorf("refusing to %s %s: VG %s lost its lease storage %s and was killed on this host; recover it first (`lvhook kill-vg --recover %s`)",
			verb, r.dom.Name, vg, when, vg)
	}
	return nil
}

// splitKilled removes from refs the LVs of killed VGs and returns them.
func splitKilled(refs []lvmlock.Ref, killed map[string]state.Killed) (alive, dead []lvmlock.Ref) {
	for _, ref := range refs {
		if _, ok := killed[ref.VG]; ok {
			dead = append(dead, ref)
		} else {
			alive = append(alive, ref)
		}
	}
	return alive, dead
}

// releaseKilled is the release of a domain all of whose LVs are in killed
// VGs: no lvm, no host lock; its records go (the domain runs no more).
func (r *run) releaseKilled(dead []lvmlock.Ref) error {
	r.log.Warn().Str("lvs", lvmlock.JoinRefs(dead)).
		Msg("stopped; its VG was killed on this host (lease storage lost): LVs left to `lvhook kill-vg --recover`")
	if err := r.State.ClearIncoming(r.dom.UUID); err != nil {
		r.log.Warn().Err(err).Msg("cannot clear incoming-migration marker")
	}
	return errors.Join(r.State.Remove(state.PendingDir, r.dom.UUID), r.State.Remove(state.DomainsDir, r.dom.UUID))
}

// allKilled tells whether refs is not empty and every LV of it is in a
// killed VG.
func allKilled(refs []lvmlock.Ref, killed map[string]state.Killed) bool {
	return len(refs) > 0 && !slices.ContainsFunc(refs, func(r lvmlock.Ref) bool { _, ok := killed[r.VG]; return !ok })
}
