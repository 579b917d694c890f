package evacuate

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/virt"
)

// fallbackAll gives each domain that did not move its fallback, once every
// migration has ended: lowest priority first (the reverse of the plan's
// order), the domains of one priority parallel at most at once, the next
// priority only once they are done.
func (r *runState) fallbackAll(ctx context.Context) {
	idx := slices.Clone(r.fallback)
	slices.SortFunc(idx, func(a, b int) int {
		sa, sb := r.steps[a], r.steps[b]
		return cmp.Or(cmp.Compare(sa.Priority, sb.Priority), strings.Compare(sb.Name, sa.Name))
	})
	for len(idx) > 0 {
		n := 1
		for n < len(idx) && r.steps[idx[n]].Priority == r.steps[idx[0]].Priority {
			n++
		}
		group := make(chan int)
		var wg sync.WaitGroup
		for range min(r.parallel, n) {
			wg.Go(func() {
				for i := range group {
					r.fallbackOne(ctx, i)
				}
			})
		}
		for _, i := range idx[:n] {
			group <- i
		}
		close(group)
		wg.Wait()
		idx = idx[n:]
	}
}

// fallbackOne applies step i's fallback.
func (r *runState) fallbackOne(ctx context.Context, i int) {
	e, st, d := r.e, r.steps[i], &r.rep.Domains[i]
	started := e.now()
	defer func() { d.took += e.now().Sub(started) }()
	if ctx.Err() != nil {
		d.Result = ResultNotDone
		d.addError(st.Fallback + " not done: the evacuation's time ran out (evacuate.timeout), or it was stopped")
		e.say(d, "%s: %s not done: the evacuation's time ran out (evacuate.timeout), or it was stopped", st.Name, st.Fallback)
		return
	}
	if r.gone(ctx, st.UUID) {
		d.Result = ResultGone
		e.say(d, "%s: no longer runs here", st.Name)
		return
	}
	e.say(d, "%s: %s, not migrated: %s", st.Name, st.Fallback, d.Reason)
	switch st.Fallback {
	case ActionManagedSave:
		d.Actions = append(d.Actions, ActionManagedSave)
		deadline, _ := ctx.Deadline()
		err := e.Libvirt.ManagedSave(ctx, st.UUID, time.Until(deadline))
		if err == nil {
			d.Result = ResultSaved
			e.say(d, "%s: saved in %s (start it on this host only: see lvhook(8))", st.Name, took(e.now().Sub(started)))
			return
		}
		msg := lvmlock.OneLine(err.Error())
		d.addError(msg)
		e.say(d, "%s: managed save failed: %s", st.Name, msg)
		r.leave(ctx, i)
	case ActionLeave:
		r.leave(ctx, i)
	default:
		r.stop(ctx, i)
	}
}

// leave keeps a domain running here only when it holds every LV it needs ex
// ex here, waiting up to exclusive_timeout for the lock helper to convert
// what a failed migration left sh; otherwise it stops it: a domain is never
// left with a shared lock.
func (r *runState) leave(ctx context.Context, i int) {
	e, st, d := r.e, r.steps[i], &r.rep.Domains[i]
	d.Actions = append(d.Actions, ActionLeave)
	why := r.waitExclusive(ctx, st.Domain)
	if why == "" {
		d.Result = ResultLeft
		e.say(d, "%s: left running here (it holds every LV ex)", st.Name)
		return
	}
	e.say(d, "%s: not left running: %s; shutting it down (never left with a shared lock)", st.Name, why)
	r.stop(ctx, i)
}

// waitExclusive waits, up to exclusive_timeout, until d holds every LV of a
// shared VG it needs ex in ex here; it returns why not, or "".
func (r *runState) waitExclusive(ctx context.Context, d Domain) string {
	if !d.DisksKnown {
		return "its LVs are unknown (" + d.CannotMove + ")"
	}
	var vgs []string
	for _, disk := range d.Disks {
		if disk.Mode == lvmlock.ModeEx && !slices.Contains(vgs, disk.VG) {
			vgs = append(vgs, disk.VG)
		}
	}
	if len(vgs) == 0 {
		return ""
	}
	bound := r.e.Config.Daemon.ExclusiveTimeout.D()
	why := ""
	r.e.waitFor(ctx, bound, func() bool {
		why = r.notExclusive(ctx, d, vgs)
		return why == ""
	})
	if why != "" {
		return fmt.Sprintf("%s after %s (daemon.exclusive_timeout, or the evacuation's timeout)", why, took(bound))
	}
	return ""
}

// notExclusive says which LV of d, that it needs ex, is not ex here, or "".
func (r *runState) notExclusive(ctx context.Context, d Domain, vgs []string) string {
	st, err := r.e.LVM.State(ctx, true, vgs...)
	if err != nil {
		return "its LVs' locks cannot be read (" + lvmlock.Reason(err) + ")"
	}
	for _, disk := range d.Disks {
		if lv, ok := st.LVs[disk.Ref]; ok && lv.Shared() && disk.Mode == lvmlock.ModeEx && st.Mode(disk.Ref) != lvmlock.ModeEx {
			return fmt.Sprintf("%s is %s here", disk.Ref, st.Mode(disk.Ref))
		}
	}
	return ""
}

// stop shuts a domain down and destroys it when it is still running after
// shutdown_timeout. A shutdown libvirt refuses is asked again at each look
// until then; a crashed guest, which cannot shut down (libvirt refuses: not
// running) but still holds its LVs, is destroyed at once.
func (r *runState) stop(ctx context.Context, i int) {
	e, st, d := r.e, r.steps[i], &r.rep.Domains[i]
	started := e.now()
	d.Actions = append(d.Actions, ActionShutdown)
	bound := e.Config.Evacuate.ShutdownTimeout.D()
	refused := e.Libvirt.Shutdown(ctx, st.UUID)
	if refused != nil {
		state, err := e.Libvirt.DomainState(ctx, st.UUID)
		switch {
		case errors.Is(err, virt.ErrNoDomain) || err == nil && state == virt.StateShutoff:
			d.Result = ResultGone
			e.say(d, "%s: no longer runs here", st.Name)
			return
		case err == nil && state == virt.StateCrashed:
			bound = 0
			e.say(d, "%s: crashed, it cannot shut down: destroying it", st.Name)
		default:
			msg := lvmlock.OneLine(refused.Error())
			d.addError(msg)
			e.say(d, "%s: shutdown refused (%s): asking again until %s have passed", st.Name, msg, bound)
		}
	}
	looks := 0
	gone := e.waitFor(ctx, bound, func() bool {
		if r.gone(ctx, st.UUID) {
			return true
		}
		if looks++; refused != nil && bound > 0 && looks > 1 {
			refused = e.Libvirt.Shutdown(ctx, st.UUID)
		}
		return false
	})
	if gone {
		d.Result = ResultShutDown
		e.say(d, "%s: shut down in %s", st.Name, took(e.now().Sub(started)))
		return
	}
	if bound > 0 {
		e.say(d, "%s: still running after %s (evacuate.shutdown_timeout): destroying it", st.Name, bound)
	}
	d.Actions = append(d.Actions, ActionDestroy)
	if err := e.Libvirt.Destroy(ctx, st.UUID); err != nil && !errors.Is(err, virt.ErrNoDomain) {
		d.Result = ResultFailed
		msg := lvmlock.OneLine(err.Error())
		d.addError(msg)
		e.say(d, "%s: destroy failed: %s", st.Name, msg)
		return
	}
	if !r.waitGone(ctx, st.UUID, e.reserve()) {
		d.Result = ResultFailed
		d.addError("still running after its destroy")
		e.say(d, "%s: still running after its destroy", st.Name)
		return
	}
	d.Result = ResultDestroyed
	e.say(d, "%s: destroyed after %s", st.Name, took(e.now().Sub(started)))
}

// waitGone waits, up to bound, until the domain no longer runs here.
func (r *runState) waitGone(ctx context.Context, uuid string, bound time.Duration) bool {
	return r.e.waitFor(ctx, bound, func() bool { return r.gone(ctx, uuid) })
}

// waitFor asks done, then again after each pause of Poll, until it says
// yes, for at most bound (on the Evacuator's clock) and until ctx ends.
func (e *Evacuator) waitFor(ctx context.Context, bound time.Duration, done func() bool) bool {
	deadline := e.now().Add(bound)
	for {
		if done() {
			return true
		}
		left := deadline.Sub(e.now())
		if left <= 0 || e.sleep(ctx, min(left, e.poll())) != nil {
			return false
		}
	}
}

// gone tells whether a domain no longer runs here. A libvirt that does not
// answer says nothing: the domain is taken as running.
func (r *runState) gone(ctx context.Context, uuid string) bool {
	state, err := r.e.Libvirt.DomainState(ctx, uuid)
	return errors.Is(err, virt.ErrNoDomain) || err == nil && state == virt.StateShutoff
}
