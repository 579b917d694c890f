package migration

import (
	"maps"
	"slices"
	"time"

	"github.com/lvhook/lvhook/domxml"
	"github.com/lvhook/lvhook/state"
)

// A VG killed on this host (its lease storage lost, `lvhook kill-vg`) is
// no longer the lock helper's: its LVs have the error table, lvmlockd
// dropped or refuses their locks, lvm would scan the lost storage. Until
// `lvhook kill-vg --recover` removes the record, the helper asks lvm
// nothing about it: no conversion, no deactivation retry, no downgrade.
// It says so once per kill in its journal; `lvhook check` reports it.

// killedVGs reads the kill records and logs each kill once, and each
// recovery.
func (h *Helper) killedVGs() map[string]state.Killed {
	killed, err := h.State.KilledVGs()
	if err != nil {
		h.Log.Warn().Err(err).Msg("cannot read the kill records: no VG taken as killed")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.killedSeen == nil {
		h.killedSeen = map[string]time.Time{}
	}
	for _, vg := range slices.Sorted(maps.Keys(killed)) {
		k := killed[vg]
		if seen, ok := h.killedSeen[vg]; ok && seen.Equal(k.Started) {
			continue
		}
		h.killedSeen[vg] = k.Started
		h.Log.Error().Str("vg", vg).Time("killed", k.Started).Bool("verified", k.Verified).
			Msg("VG killed on this host (lease storage lost): the lock helper leaves its LVs alone until `lvhook kill-vg --recover`")
	}
	for vg := range h.killedSeen {
		if _, ok := killed[vg]; !ok {
			delete(h.killedSeen, vg)
			h.Log.Info().Str("vg", vg).Msg("VG recovered: the lock helper reconciles its LVs again")
		}
	}
	return killed
}

// withoutKilled returns disks without those of killed VGs.
func withoutKilled(disks []domxml.Disk, killed map[string]state.Killed) []domxml.Disk {
	return slices.DeleteFunc(slices.Clone(disks), func(d domxml.Disk) bool { _, ok := killed[d.VG]; return ok })
}
