package hook

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/lvhook/lvhook/domxml"
	"github.com/lvhook/lvhook/internal/clock"
	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/peer"
	"github.com/lvhook/lvhook/state"
)

// markIncoming is migrate begin on the destination. It activates nothing (an
// offline migration gets only this call). The source's libvirt already has
// its outgoing migration job, so this is when the source can tell which host
// the job goes to: the handover is reserved here, for this host and that
// job, and the marker tells the prepare that follows which peer to ask.
func (r *run) markIncoming(ctx context.Context) error {
	var m state.Incoming
	switch {
	case len(r.dom.Disks) == 0:
		r.log.Debug().Msg("incoming migration: no LV disks, no handover needed")
		return nil
	case r.Handover == nil:
		// No peer can hand its locks over: the prepare that follows is
		// an ordinary start, refused while the source holds the LVs.
		m.Refused = "no [[daemon.peer]] configured"
		r.log.Info().Msg("incoming migration: no [[daemon.peer]] configured, so no lock handover; a live migration is refused while the source holds the LVs")
	default:
		start := time.Now()
		src, err := r.Handover.Reserve(ctx, r.dom, r.holder)
		if err != nil {
			m.Refused = err.Error()
			r.log.Info().Err(err).Dur("took", time.Since(start)).
				Msg("incoming migration: no peer has the domain migrating out (an offline migration, or the source's lock helper is down); a following prepare is an ordinary start")
		} else {
			m.Source = src
			r.log.Info().Str("peer", src).Dur("took", time.Since(start)).Msg("incoming migration: lock handover reserved on the source, nothing activated")
		}
	}
	if err := r.State.MarkIncoming(r.dom.UUID, m); err != nil {
		return fmt.Errorf("refusing incoming migration of %s: cannot record it: %w", r.dom.Name, err)
	}
	return nil
}

// incomingHolderTimeout bounds incomingHolder: migrate begin is a hook
// libvirt waits for, and the lookup only saves requests to other peers.
const incomingHolderTimeout = 2 * time.Second

// incomingHolder returns the sanlock host_id holding the lease of the
// domain's first exclusive LV, the source's before the handover, for the
// reservation to ask that peer first; 0 (unknown) when the domain has no
// exclusive LV, no Sanlock is configured, or the reads fail or take longer
// than incomingHolderTimeout. It never fails migrate begin.
func (r *run) incomingHolder(ctx context.Context) int {
	d := r.diskOf(func(d domxml.Disk) bool { return d.Mode == lvmlock.ModeEx })
	if d == nil || r.Sanlock == nil {
		r.log.Debug().Msg("incoming migration: lease holder not looked up (no exclusive LV, or no sanlock)")
		return 0
	}
	start := time.Now()
	id := r.leaseHolder(ctx, d.Ref, incomingHolderTimeout)
	r.log.Debug().Str("lv", d.Ref.String()).Int("holder_host_id", id).Dur("took", time.Since(start)).
		Msg("incoming migration: lease holder looked up (0: unknown)")
	return id
}

// activate is prepare begin: ex for a start or restore, sh for the
// destination of a live migration. It asks lvm nothing before lvchange:
// the domain is not running here, so its LVs are inactive here except those
// lvhook's records give to other domains; lvchange itself skips LVs of
// local VGs and names missing LVs and VGs.
func (r *run) activate(ctx context.Context) error {
	marker, fresh, err := r.State.TakeIncoming(r.dom.UUID, r.Config.MarkerTTL.D())
	if err != nil {
		return fmt.Errorf("refusing to start %s: %w", r.dom.Name, err)
	}
	// Only a handover reserved on the source by this host's migrate begin
	// makes an incoming migration; a marker alone is an ordinary start.
	incoming := fresh && marker.Source != "" && r.Handover != nil
	if fresh && !incoming {
		r.noHandover = cmp.Or(marker.Refused, "no [[daemon.peer]] configured")
	}
	verb := "start"
	if incoming {
		verb = "accept the incoming migration of"
	}
	if len(r.dom.Disks) == 0 {
		r.log.Info().Msg("no LV disks: nothing to activate")
		return nil
	}
	// lvmlockd cannot tell two domains of the same host apart: an LV this
	// host already holds ex for another domain would be granted again.
	inUse := r.usedByOthers()
	prior := map[lvmlock.Ref]lvmlock.Mode{}
	targets := make([]lvmlock.Target, 0, len(r.dom.Disks))
	for _, d := range r.dom.Disks {
		t := lvmlock.Target{Ref: d.Ref, Mode: d.Mode}
		if incoming {
			t.Mode = lvmlock.ModeSh
		}
		if u, ok := inUse[d.Ref]; ok {
			if t.Mode == lvmlock.ModeEx || u.mode == lvmlock.ModeEx {
				return fmt.Errorf("refusing to %s %s: %s is already used by domain %s on this host (mark the disk <shareable/> in both domains if that is intended)", verb, r.dom.Name, d.Ref, u.domain)
			}
			prior[d.Ref] = u.mode
		}
		targets = append(targets, t)
	}

	if err := r.refuseKilled(verb, lvmlock.RefsOf(targets)); err != nil {
		return err
	}
	// Intent first: a hook killed from here on (SIGKILL, its hard
	// timeout) leaves a pending deactivation of these LVs that release end
	// and the lock helper carry out, so nothing this call activates is ever
	// left active with no record. A start that cannot write it is refused
	// before any lock is taken.
	if err := r.recordIntent(targets); err != nil {
		return fmt.Errorf("refusing to %s %s: cannot record its LVs in %s: %w", verb, r.dom.Name, r.State.Dir, err)
	}
	activate := func() error {
		err := r.activateTargets(ctx, prior, targets)
		if err != nil && lvmlock.IsVGNotFound(err) {
			// A path that only looks like /dev/VG/LV (a dm-crypt or
			// multipath name): drop its disks if the device exists.
			if rest, dropped := r.dropNonLVM(err, targets); dropped {
				targets = rest
				err = r.activateTargets(ctx, prior, targets)
			}
		}
		return err
	}
	if incoming {
		err = r.activateIncoming(ctx, marker.Source, targets, activate)
		if errors.Is(err, peer.ErrRefused) {
			// The source that reserved the handover no longer grants
			// it: its migration job ended (cancelled), or its lock helper
			// restarted. The domain's own modes, ex above all, are safe
			// to ask: lvmlockd refuses them while any other host holds
			// the LVs, as a live source does.
			if r.activateAsStart(ctx, &targets, prior) == nil {
				incoming = false
				err = nil
			}
		}
	} else {
		err = r.retry(ctx, startRetryable, activate)
		if lvmlock.IsLockspaceStarting(err) {
			err = r.waitLockspace(ctx, err, activate)
		}
	}
	if err != nil {
		return r.refusal(ctx, verb, targets, err)
	}
	rec := state.Record{Name: r.dom.Name, UUID: r.dom.UUID, Incoming: incoming}
	for _, d := range r.dom.Disks {
		if slices.ContainsFunc(targets, func(t lvmlock.Target) bool { return t.Ref == d.Ref }) {
			rec.LVs = append(rec.LVs, state.RecordLV{VG: d.VG, LV: d.LV, Mode: d.Mode})
		}
	}
	if err := r.State.Save(state.DomainsDir, rec); err != nil {
		// Without its record a destination never returns to ex and a
		// detached disk is never released: undo and refuse.
		r.undo(ctx)
		return fmt.Errorf("refusing to %s %s: cannot record its LVs in %s (%v); what this call activated was deactivated", verb, r.dom.Name, r.State.Dir, err)
	}
	if err := r.State.Remove(state.PendingDir, r.dom.UUID); err != nil {
		r.log.Warn().Err(err).Msg("cannot remove the intent record: the lock helper will find the LVs in use and leave them")
	}
	return nil
}

// recordIntent saves, as the domain's pending deactivation, the LVs this
// call is about to activate (with any the record already held).
func (r *run) recordIntent(targets []lvmlock.Target) error {
	rec, _, err := r.State.Load(state.PendingDir, r.dom.UUID)
	if err != nil {
		r.log.Warn().Err(err).Msg("pending record unreadable: replaced")
	}
	rec.Name, rec.UUID = r.dom.Name, r.dom.UUID
	for _, t := range targets {
		if !slices.ContainsFunc(rec.LVs, func(l state.RecordLV) bool { return l.Ref() == t.Ref }) {
			rec.LVs = append(rec.LVs, state.RecordLV{VG: t.VG, LV: t.LV})
		}
	}
	return r.State.Save(state.PendingDir, rec)
}

// activateTargets activates targets and remembers what it changed, for undo.
func (r *run) activateTargets(ctx context.Context, prior map[lvmlock.Ref]lvmlock.Mode, targets []lvmlock.Target) error {
	changes, err := r.lvm.Activate(ctx, lvmlock.Assume(prior), targets)
	r.changes = append(r.changes, changes...)
	return err
}

// undo deactivates what this call activated (not what it only converted),
// within the rollback bound even when ctx has ended.
func (r *run) undo(ctx context.Context) {
	var off []lvmlock.Ref
	for _, c := range r.changes {
		if c.From == lvmlock.ModeNone && !slices.Contains(off, c.Ref) {
			off = append(off, c.Ref)
		}
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.Config.RollbackTimeout.D())
	defer cancel()
	if _, err := r.lvm.Deactivate(ctx, nil, off); err != nil {
		r.log.Error().Err(err).Msg("undo failed: the pending record makes the lock helper retry")
	}
}

// activateAsStart activates the domain's LVs in their own modes, as a start
// does, after a refused handover. On failure it leaves targets as they were
// and the caller reports the handover's refusal, the more useful line.
func (r *run) activateAsStart(ctx context.Context, targets *[]lvmlock.Target, prior map[lvmlock.Ref]lvmlock.Mode) error {
	own := make([]lvmlock.Target, 0, len(*targets))
	for _, t := range *targets {
		if d := r.diskOf(func(d domxml.Disk) bool { return d.Ref == t.Ref }); d != nil {
			own = append(own, lvmlock.Target{Ref: t.Ref, Mode: d.Mode})
		}
	}
	if err := r.activateTargets(ctx, prior, own); err != nil {
		r.log.Info().Err(err).Msg("no peer downgraded and the LVs are held elsewhere: refused")
		return err
	}
	r.log.Info().Msg("no host has the domain migrating out and no other host holds its LVs: activated as an ordinary start")
	*targets = own
	return nil
}

// dropNonLVM removes the targets of VGs lvm does not know when every disk
// naming that VG exists as a device: those are not LVs. It reports whether
// it removed any; a missing VG whose path is missing too stays an error.
func (r *run) dropNonLVM(err error, targets []lvmlock.Target) ([]lvmlock.Target, bool) {
	var e *lvmlock.Error
	if !errors.As(err, &e) {
		return targets, false
	}
	for _, f := range e.Failures {
		if f.Kind != lvmlock.KindVGNotFound {
			continue
		}
		for _, d := range r.dom.Disks {
			if d.VG == f.VG && !(strings.HasPrefix(d.Path, "/dev/") && pathExists(d.Path)) {
				return targets, false
			}
		}
	}
	var rest []lvmlock.Target
	for _, t := range targets {
		if !slices.ContainsFunc(e.Failures, func(f lvmlock.Failure) bool { return f.Kind == lvmlock.KindVGNotFound && f.VG == t.VG }) {
			rest = append(rest, t)
		} else {
			r.log.Debug().Str("vg", t.VG).Str("lv", t.LV).Msg("not an LV: left alone")
		}
	}
	return rest, len(rest) < len(targets)
}

// activateIncoming takes sh for an incoming live migration: first the
// source's downgrade through the peers' lock helpers (a refused -asy costs
// several seconds of sanlock retries), then -asy with bounded retries.
func (r *run) activateIncoming(ctx context.Context, source string, targets []lvmlock.Target, activate func() error) error {
	refs := make([]lvmlock.Ref, len(targets))
	for i, t := range targets {
		refs[i] = t.Ref
	}
	start := time.Now()
	handoverErr := r.Handover.Downgrade(ctx, source, r.dom, refs)
	ev := r.log.Info()
	if handoverErr != nil {
		ev = r.log.Warn().Err(handoverErr)
	}
	ev.Str("peer", source).Dur("took", time.Since(start)).Msg("source downgrade requested")
	if errors.Is(handoverErr, peer.ErrRefused) {
		r.noHandover = handoverErr.Error()
		return handoverErr
	}
	retryable := func(err error) bool {
		// Without a yes from the source, more -asy tries only cost time.
		return handoverErr == nil && lvmlock.Transient(err) || startRetryable(err)
	}
	err := r.retry(ctx, retryable, activate)
	if err != nil && handoverErr != nil {
		return fmt.Errorf("%w (source downgrade: %v)", err, handoverErr)
	}
	return err
}

// lockspacePoll is the pause between activations while a lockspace starts.
const lockspacePoll = 2 * time.Second

// waitLockspace tries activate again every lockspacePoll while it fails
// because a lockspace is still starting, for at most LockspaceWait: at boot
// a domain can be started while its VG's lockspace is being joined (a join
// takes 20 s or more, 160 s after a crash). lvchange takes no lock while it
// is refused, so a try costs one lvm call. It returns activate's last error.
func (r *run) waitLockspace(ctx context.Context, err error, activate func() error) error {
	bound := r.Config.LockspaceWait.D()
	if bound <= 0 {
		return err
	}
	r.log.Info().Err(err).Dur("bound", bound).Msg("a lockspace is still starting: waiting for it")
	// The time waited is counted in pauses, lvchange's own time aside: the
	// hook's budget (hook_timeout + lockspace_wait) covers both.
	var waited time.Duration
	for waited < bound {
		pause := min(lockspacePoll, bound-waited)
		if r.sleep(ctx, pause) != nil {
			break
		}
		waited += pause
		if err = activate(); !lvmlock.IsLockspaceStarting(err) {
			r.log.Info().Err(err).Dur("waited", waited).Msg("lockspace wait over")
			return err
		}
	}
	r.lockspaceWaited = max(waited, time.Second)
	return err
}

// retry runs f until it succeeds, fails with an error retryable rejects, or
// SharedRetries more tries are spent, doubling RetryDelay between tries.
// startRetryable: a start is tried again while the lockspace is still
// starting, and after a lock manager error (sanlock failed a VG lock: seen
// once under load on the harness), never when another host holds an LV.
func startRetryable(err error) bool {
	return lvmlock.IsLockspaceStarting(err) || lvmlock.IsLockManagerError(err)
}

func (r *run) retry(ctx context.Context, retryable func(error) bool, f func() error) error {
	delay := r.Config.RetryDelay.D()
	for attempt := 0; ; attempt++ {
		err := f()
		if err == nil || attempt >= r.Config.SharedRetries || !retryable(err) {
			return err
		}
		r.log.Info().Err(err).Int("attempt", attempt+1).Dur("delay", delay).Msg("retrying")
		if serr := r.sleep(ctx, delay); serr != nil {
			return err
		}
		delay *= 2
	}
}

func (r *run) sleep(ctx context.Context, d time.Duration) error {
	if r.Sleep != nil {
		return r.Sleep(ctx, d)
	}
	return clock.Sleep(ctx, d)
}

// managedDisks returns those of disks that are LVs of shared VGs. A disk
// whose VG lvm does not know is an error unless its path exists (then it is
// some other device that merely looks like /dev/VG/LV).
func (r *run) managedDisks(st *lvmlock.State, disks []domxml.Disk) ([]domxml.Disk, error) {
	var out []domxml.Disk
	for _, d := range disks {
		if slices.Contains(st.MissingVGs, d.VG) {
			if strings.HasPrefix(d.Path, "/dev/") && pathExists(d.Path) {
				r.log.Debug().Str("path", d.Path).Msg("not an LV: left alone")
				continue
			}
			return nil, fmt.Errorf("disk %s: volume group %s not found (source %s)", d.Target, d.VG, d.Path)
		}
		lv, ok := st.LVs[d.Ref]
		if !ok {
			return nil, fmt.Errorf("disk %s: LV %s not found", d.Target, d.Ref)
		}
		if !lv.Shared() {
			r.log.Debug().Str("vg", d.VG).Str("lv", d.LV).Msg("VG is not shared: left alone")
			continue
		}
		out = append(out, d)
	}
	return out, nil
}

var pathExists = func(p string) bool { _, err := os.Stat(p); return err == nil }
