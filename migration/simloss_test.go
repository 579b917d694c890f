package migration

// The model's storage-loss actor: host h loses a VG's lease storage. Its
// lock requests in the VG fail from then on; 80 s after its last renewal
// lvmlockd kills the VG there and lvmlockctl runs the REAL kill-vg
// (killvg.Killer, lvmlockctl its parent) against h's fake libvirtd, whose
// destroys end in the REAL hook's stopped and release; when kill-vg exits 0
// lvmlockctl drops the VG on h: its devices stay there with the error
// table, its leases stay on the storage for the other hosts until h's host
// lease is dead (140 s after the last renewal). Then the storage comes back
// and the operator runs the REAL `kill-vg --recover`.
//
// It adds to the invariant: an LV a domain needs exclusive is writable
// (active and not wiped) on at most one host, unless all of them hold it
// sh (a live migration); and from its kill to its recovery no lvchange of
// the VG runs on h (neither the hook nor the lock helper touches it).

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/lvhook/lvhook/domxml"
	"github.com/lvhook/lvhook/killvg"
	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/virt"
)

// sanlock's timeline after a host's last renewal (io_timeout 10 s): the
// kill at 80 s, the host lease dead for the others at 140 s.
const (
	lossKillAfter   = 80 * time.Second
	lossExpireAfter = 140 * time.Second
)

// lossStats counts the storage losses of a run.
type lossStats struct {
	// losses: lease storages lost; lossDestroys: the domains kill-vg
	// destroyed; lossStarts: starts of those elsewhere; recoveries:
	// kill-vg --recover runs.
	losses, lossDestroys, lossStarts, recoveries int
}

func (a *lossStats) add(b lossStats) {
	a.losses += b.losses
	a.lossDestroys += b.lossDestroys
	a.lossStarts += b.lossStarts
	a.recoveries += b.recoveries
}

// lossAct is one lost lease storage, from the loss to the recovery.
type lossAct struct {
	h  *simHost
	vg string
	t0 time.Time
	// back: when the storage comes back, some time after h's leases
	// expired (meanwhile the domains may start elsewhere).
	back     time.Duration
	phase    int // 0 lost, 1 killed and dropped, 2 leases expired
	finished bool
	// stopped: the domains kill-vg destroyed, which the operator starts
	// on another host (refused until h's leases expired).
	stopped []*simDom
}

func (a *lossAct) involves(h *simHost) bool { return h == a.h }
func (a *lossAct) done() bool               { return a.finished }

// lossOptions offers a storage loss on each host when none runs: at any
// moment, whatever the host is doing.
func (s *sim) lossOptions() []option {
	if slices.ContainsFunc(s.acts, func(a activity) bool { _, ok := a.(*lossAct); return ok }) {
		return nil
	}
	var opts []option
	for _, h := range s.hosts {
		opts = append(opts, option{name: h.name + " loses a VG's lease storage", weight: 1, host: h.id, fault: true, breaks: true,
			run: func() {
				vg := []string{"vg0", "vg1"}[s.rng.Intn(2)]
				s.tracef("%s lost %s's lease storage", h.name, vg)
				s.cluster.LoseStorage(h.id, vg)
				s.stats.losses++
				back := lossExpireAfter + time.Duration(s.rng.Intn(180))*time.Second
				s.acts = append(s.acts, &lossAct{h: h, vg: vg, t0: s.now(), back: back})
			}})
	}
	return opts
}

func (a *lossAct) options(s *sim) []option {
	h := a.h
	name := func(what string) string { return fmt.Sprintf("%s, %s lost: %s", h.name, a.vg, what) }
	due := []time.Duration{lossKillAfter, lossExpireAfter, a.back}[a.phase]
	var opts []option
	if a.phase > 0 {
		opts = a.startElsewhere(s)
	}
	if wait := a.t0.Add(due).Sub(s.now()); wait > 0 {
		// While the storage is away the cluster lives on (the domains
		// start elsewhere once h's leases expired): time passes as
		// usual then, but in the quiescence.
		if a.phase == 2 && s.faults {
			return opts
		}
		return append(opts, option{name: name(fmt.Sprintf("time passes (%s)", wait.Round(time.Second))), weight: 1, bg: true,
			run: func() { s.advance(wait) }})
	}
	// The model lets what runs on h finish first (kill-vg's destroys
	// would cut a start, a stop or a migration of h in the middle), and
	// libvirtd start again.
	if s.busy(h) || !h.libvirtUp {
		return opts
	}
	switch a.phase {
	case 0:
		return append(opts, option{name: name("lvmlockd kills it, lvmlockctl runs kill-vg"), weight: 10, host: h.id, run: func() { s.killVG(a) }})
	case 1:
		return append(opts, option{name: name("its host lease is dead for the others"), weight: 10, bg: true, run: func() {
			s.cluster.Expire(h.id, a.vg)
			a.phase++
		}})
	}
	return append(opts, option{name: name("storage back, kill-vg --recover"), weight: 10, host: h.id, run: func() {
		s.cluster.RestoreStorage(h.id, a.vg)
		done, err := s.killer(h).Recover(context.Background(), a.vg)
		if err != nil || !done {
			s.violate("%s: kill-vg --recover %s = %v, %v", h.name, a.vg, done, err)
		}
		s.edit(func() { delete(h.killed, a.vg) })
		s.stats.recoveries++
		a.finished = true
	}})
}

// startElsewhere: the operator starts a domain kill-vg stopped on another
// host, which lvmlockd refuses until h's leases expired.
func (a *lossAct) startElsewhere(s *sim) []option {
	var opts []option
	for _, d := range a.stopped {
		if d.busy > 0 || s.presentAnywhere(d) {
			continue
		}
		for _, o := range s.hosts {
			if o == a.h || !o.libvirtUp || s.involvedWith(o, d) {
				continue
			}
			opts = append(opts, option{name: fmt.Sprintf("%s: virsh start %s (stopped by kill-vg on %s)", o.name, d.name, a.h.name),
				weight: 3, host: o.id, run: func() {
					s.stats.lossStarts++
					s.begin(&startAct{d: d, h: o})
				}})
		}
	}
	return opts
}

// busy tells an activity other than a loss involving h.
func (s *sim) busy(h *simHost) bool {
	return slices.ContainsFunc(s.acts, func(a activity) bool {
		inv, ok := a.(interface{ involves(*simHost) bool })
		_, loss := a.(*lossAct)
		return ok && !loss && inv.involves(h)
	})
}

// killVG is lvmlockctl --kill: kill_vg to lvmlockd, the kill command, and
// the drop after its exit 0. The domains kill-vg destroys lose their QEMU
// at once; libvirt's stopped and release hooks follow, in name order.
func (s *sim) killVG(a *lossAct) {
	h := a.h
	s.cluster.Kill(h.id, a.vg)
	s.edit(func() { h.killed[a.vg] = true })
	rec, err := s.killer(h).Kill(context.Background(), a.vg, false)
	switch {
	case err != nil || !rec.Verified:
		s.violate("%s: kill-vg %s = %+v, %v; want verified", h.name, a.vg, rec, err)
	default:
		s.cluster.Drop(h.id, a.vg)
	}
	for _, d := range s.destroyedOn(h) {
		s.stats.lossDestroys++
		a.stopped = append(a.stopped, d)
		_ = s.callHook(h, d, "stopped", "end")
		_ = s.callHook(h, d, "release", "end")
		s.setVM(h, d, nil)
		s.emit(h, d, virt.EventStopped)
	}
	for _, d := range s.doms {
		if v := s.vmOf(h, d); v != nil && slices.ContainsFunc(d.disks, func(disk domxml.Disk) bool { return disk.VG == a.vg }) {
			s.violate("%s still runs on %s after kill-vg %s", d.name, h.name, a.vg)
		}
	}
	a.phase++
}

// killer is kill-vg on h, as lvmlockctl starts it.
func (s *sim) killer(h *simHost) *killvg.Killer {
	cfg := s.configOf(h)
	log := s.log.With().Str("host", h.name).Str("role", "kill-vg").Logger()
	return &killvg.Killer{Config: cfg, LVM: &lvmlock.Client{Runner: &checkRunner{s: s, h: h}, Log: log}, State: h.state,
		Connect: func(context.Context) (killvg.Libvirt, error) { return &simKillConn{s: s, h: h}, nil },
		Log:     log, Parent: func() string { return "lvmlockctl" }, Now: s.now,
		Sanlock: lvmlock.Sanlock{Runner: &checkRunner{s: s, h: h}}}
}

// simKillConn is kill-vg's connection to h's fake libvirtd. Destroy kills
// QEMU at once (kill-vg destroys in parallel: nothing else of the model
// runs here) and leaves the hooks to killVG.
type simKillConn struct {
	s *sim
	h *simHost
}

func (c *simKillConn) ActiveDomains(ctx context.Context) ([]virt.Domain, error) {
	return (&simConn{s: c.s, h: c.h, gen: c.h.connGen}).ActiveDomains(ctx)
}

func (c *simKillConn) DomainXML(ctx context.Context, uuid string) ([]byte, error) {
	return (&simConn{s: c.s, h: c.h, gen: c.h.connGen}).DomainXML(ctx, uuid)
}

func (c *simKillConn) Destroy(_ context.Context, uuid string) error {
	s := c.s
	for _, d := range s.doms {
		if d.uuid != uuid {
			continue
		}
		v := s.vmOf(c.h, d)
		if v == nil || !v.qemu {
			return virt.ErrNoDomain
		}
		s.edit(func() { v.qemu, v.paused, v.incoming, v.job, v.destroyed = false, false, false, virt.JobNone, true })
		s.open(c.h, d, false)
		return nil
	}
	return virt.ErrNoDomain
}

func (c *simKillConn) Close() error { return nil }

// destroyedOn lists the domains kill-vg destroyed on h, by name.
func (s *sim) destroyedOn(h *simHost) []*simDom {
	var out []*simDom
	for _, d := range s.doms {
		if v := s.vmOf(h, d); v != nil && v.destroyed {
			out = append(out, d)
		}
	}
	slices.SortFunc(out, func(a, b *simDom) int { return strings.Compare(a.name, b.name) })
	return out
}

// checkWritable: an LV a domain needs exclusive is writable on at most one
// host, unless every one of them holds it sh (a live migration's window).
// A device kill-vg wiped is not writable; one left without its lock after
// the drop would be, and counts as unshared.
func (s *sim) checkWritable() {
	for _, d := range s.doms {
		for _, disk := range d.disks {
			if disk.Mode != lvmlock.ModeEx {
				continue
			}
			holders := s.cluster.Holders(disk.VG, disk.LV)
			var on []string
			shared := true
			for _, h := range s.hosts {
				if s.cluster.Writable(h.id, disk.VG, disk.LV) {
					on = append(on, h.name)
					shared = shared && holders[h.id] == lvmlock.ModeSh
				}
			}
			if len(on) > 1 && !shared {
				s.violate("%s writable on %v at once", disk.Ref, on)
			}
		}
	}
}

// checkKilledChange: from kill-vg's kill of a VG on h to its recovery, no
// lvchange of that VG runs on h.
func (s *sim) checkKilledChange(h *simHost, flag string, refs []lvmlock.Ref) {
	for _, ref := range refs {
		if h.killed[ref.VG] {
			s.violations = append(s.violations, fmt.Sprintf("lvchange %s %s on %s, where %s is killed", flag, ref, h.name, ref.VG))
		}
	}
}
