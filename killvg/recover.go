package killvg

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/lvhook/lvhook/lvmlock"
)

// ErrNotYet is a recovery that cannot proceed yet; its message says what
// to do first.
var ErrNotYet = errors.New("not recovered yet")

// errNothing: no kill record, nothing to recover.
var errNothing = errors.New("nothing to recover")

// Recover undoes a kill of vg once its storage is back: it removes the
// error devices kill-vg left (refusing while one is open), joins the VG's
// lockspace again and removes the kill record; start the VG's domains after
// it. recovered is false when there was nothing to recover. An error
// wrapping ErrNotYet says what must happen first; the other errors are
// failures of a step.
//
// Which way depends on lvmlockd: after a kill that succeeded, lvmlockctl
// dropped the VG (no lockspace), so the devices go with dmsetup and the
// lockspace is started again (about 3 minutes on a host whose lease was
// lost: sanlock waits for its old host lease to expire). After a kill
// forced by hand on a VG whose lockspace still runs, lvmlockd holds the LVs'
// locks: lvm deactivates them (lvchange -an), which releases the locks.
func (k *Killer) Recover(ctx context.Context, vg string) (recovered bool, err error) {
	if err := lvmlock.ValidVG(vg); err != nil {
		return false, err
	}
	switch err := k.recover(ctx, vg); {
	case errors.Is(err, errNothing):
		return false, nil
	case err != nil:
		return false, err
	}
	return true, nil
}

func (k *Killer) recover(ctx context.Context, vg string) error {
	log := k.Log.With().Str("vg", vg).Logger()
	_, found, err := k.State.LoadKilled(vg)
	if err != nil {
		log.Warn().Err(err).Msg("kill record unreadable: recovering anyway")
	} else if !found {
		log.Info().Msg("VG not killed on this host: nothing to recover")
		return errNothing
	}
	unlock, err := k.State.LockKilled(ctx, vg)
	if err != nil {
		return fmt.Errorf("%w: a kill-vg of VG %s runs: %v", ErrNotYet, vg, err)
	}
	defer unlock()

	info, err := k.LVM.LockdInfo(ctx)
	if err != nil {
		return fmt.Errorf("lvmlockd: %w", err)
	}
	ls, running := info[vg]
	switch {
	case running && ls.KillVG && ls.DropVG:
		return fmt.Errorf("%w: lvmlockd is still dropping VG %s's locks; try again in a few seconds", ErrNotYet, vg)
	case running && ls.KillVG:
		return fmt.Errorf("%w: lvmlockd still holds VG %s's locks as killed (kill_vg=1): no kill-vg run succeeded, so lvmlockctl did not drop them; "+
			"once nothing can write the VG's LVs (`dmsetup table`), run `lvmlockctl --drop %s`, then recover again", ErrNotYet, vg, vg)
	}
	devs, err := k.devicesOf(ctx, vg)
	if err != nil {
		return err
	}
	for _, d := range devs {
		switch {
		case !lvmlock.ErrorOnly(d.table):
			return fmt.Errorf("%w: %s still has a %s table: kill-vg did not make it unwritable; find out why (journalctl -t lvhook VG=%s) before recovering",
				ErrNotYet, d.Name, targetTypes(d.table), vg)
		case d.Open > 0:
			// Every device of the VG has the error table, which maps onto
			// no other device: whatever holds one open is outside the VG.
			return fmt.Errorf("%w: %s is still open (%d): stop what holds it first (a domain kill-vg could not destroy: `virsh list`; `dmsetup info -c %s`)",
				ErrNotYet, d.Name, d.Open, d.Name)
		}
	}
	if running {
		err = k.deactivate(ctx, vg)
	} else {
		err = k.removeDevices(ctx, vg, devs)
	}
	if err != nil {
		return err
	}
	if !running {
		tries := 0
		failed := k.LVM.StartLockspaces(ctx, k.Sanlock, []string{vg}, func(a lvmlock.StartAttempt) {
			tries = a.Attempt
			log.Info().Err(a.Err).Int("try", a.Attempt).Dur("took", a.Took).Msg("lockspace start")
		})
		if err := failed[vg]; err != nil {
			return fmt.Errorf("%w: the lockspace of VG %s did not start (%d tries: %s); run `lvhook kill-vg --recover %s` again (after a lost lease sanlock may take about 3 minutes to let this host join)",
				ErrNotYet, vg, tries, lvmlock.Reason(err), vg)
		}
		log.Info().Int("tries", tries).Msg("lockspace started")
	}
	if err := k.State.RemoveKilled(vg); err != nil {
		return fmt.Errorf("remove the kill record: %w", err)
	}
	log.Warn().Msg("VG recovered: its domains may start here again")
	return nil
}

// removeDevices removes vg's error devices, in passes: a device still open
// (by one stacked on it) waits for the next pass.
func (k *Killer) removeDevices(ctx context.Context, vg string, devs []device) error {
	for len(devs) > 0 {
		var next []device
		removed := 0
		for _, d := range devs {
			if d.Open > 0 {
				next = append(next, d)
				continue
			}
			if err := k.LVM.RemoveDM(ctx, d.Name); err != nil {
				return fmt.Errorf("remove %s: %w", d.Name, err)
			}
			removed++
			k.Log.Info().Str("vg", vg).Str("dev", d.Name).Msg("error device removed")
		}
		if removed == 0 {
			var names []string
			for _, d := range next {
				names = append(names, d.Name)
			}
			return fmt.Errorf("%w: %s still open", ErrNotYet, strings.Join(names, ", "))
		}
		var err error
		if devs, err = k.devicesOf(ctx, vg); err != nil {
			return err
		}
	}
	return nil
}

// deactivate deactivates vg's active LVs with lvm, releasing their locks.
func (k *Killer) deactivate(ctx context.Context, vg string) error {
	st, err := k.LVM.State(ctx, false, vg)
	if err != nil {
		return err
	}
	var refs []lvmlock.Ref
	for r, lv := range st.LVs {
		if lv.Active {
			refs = append(refs, r)
		}
	}
	if _, err := k.LVM.Deactivate(ctx, st, refs); err != nil {
		return fmt.Errorf("deactivate the LVs of VG %s: %w", vg, err)
	}
	return nil
}
