package hook

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"github.com/lvhook/lvhook/config"
	"github.com/lvhook/lvhook/domxml"
	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/state"
)

// Call is one hook invocation: argv after the program name.
type Call struct {
	Domain, Op, SubOp, Extra string
}

// Hook runs hook calls on this host.
type Hook struct {
	Config config.Config
	LVM    *lvmlock.Client
	State  *state.State
	Log    zerolog.Logger
	// Sleep pauses between retries; tests replace it to run without waiting.
	Sleep func(ctx context.Context, d time.Duration) error
	// Handover reserves, then takes, the source's lock handover of an
	// incoming live migration through the peers' lock helpers. Nil when no
	// peers are configured: every prepare is then an ordinary start.
	Handover Handover
	// HostName names the host with a sanlock host_id, or returns "".
	HostName func(hostID int) string
	// Sanlock, when set, is read after a start refused because another host
	// holds an LV, to name that host, and at an incoming migration's
	// migrate begin, to ask the host holding the domain's LV first.
	Sanlock *lvmlock.Sanlock
}

// Handover is the destination's side of a live migration's lock handover,
// done by the peers' lock helpers (package peer's Handover asks them). libvirt's order makes
// it two steps: the destination's migrate begin runs while the source
// already has its outgoing migration job, so it reserves the handover of
// that job for this host; the prepare that follows then asks that one source
// to downgrade. A source accepts one reservation per outgoing job and grants
// the downgrade only to the host that made it, during that job: a marker
// left by an offline migration or an older job reserves nothing.
type Handover interface {
	// Reserve asks the peers which one has d migrating out now
	// and reserves that job's handover for this host; it returns that
	// peer. holder is the sanlock host_id holding d's first exclusive LV
	// (0: unknown), the source's before the handover: that peer is asked
	// first, alone, the others only if it does not say yes. It is a hint
	// about whom to ask, never a reason to say yes. Without a reservation
	// the error wraps peer.ErrRefused.
	Reserve(ctx context.Context, d *domxml.Domain, holder int) (source string, err error)
	// Downgrade asks source, which reserved the handover, to convert the
	// LVs to sh. Without its yes the error wraps peer.ErrRefused.
	Downgrade(ctx context.Context, source string, d *domxml.Domain, refs []lvmlock.Ref) error
}

// Run performs the action the event table gives for c. An error is a refusal
// or failure to report to libvirt on stderr as one line; for calls that must
// never fail (reconnect, unknown ops) Run logs and returns nil.
func (h *Hook) Run(ctx context.Context, c Call, xmlData []byte) error {
	start := time.Now()
	act := actionFor(c.Op, c.SubOp)
	log := h.Log.With().Str("domain", c.Domain).Str("op", c.Op+" "+c.SubOp).Logger()
	if c.Op == "release" && c.Extra != "-" && c.Extra != "" {
		// libvirt >= 10.5 passes why the domain stopped (shutdown, destroyed,
		// crashed, migrated, saved, failed, ...); older ones pass "-".
		log = log.With().Str("reason", c.Extra).Logger()
	}
	if act == doNothing {
		log.Debug().Msg("nothing to do")
		return nil
	}
	// verify must never fail: libvirt kills the guest if reconnect fails.
	fail := func(err error) error {
		if act == doVerify {
			log.Error().Err(err).Msg("nothing verified")
			return nil
		}
		return err
	}
	dom, err := domxml.Parse(xmlData, h.Config.StoragePoolDir)
	if err == nil && dom.Name != c.Domain {
		err = fmt.Errorf("domain XML names %q, libvirt called the hook for %q", dom.Name, c.Domain)
	}
	if err != nil && act == doDeactivate {
		// A stop must not leave locks behind because its XML cannot be
		// read now (a pool file gone, a disk form lvhook refuses): what
		// lvhook activated is in the domain's record.
		dom, err = h.recordedDomain(c.Domain, err)
	}
	if err != nil {
		return fail(err)
	}
	log = log.With().Str("uuid", dom.UUID).Logger()
	if dom.OptedOut && act != doDeactivate {
		// A release still undoes what lvhook activated before the
		// domain opted out while running (deactivate reads the record).
		log.Info().Msg("domain opted out of lvhook: nothing done")
		return nil
	}
	lvm := *h.LVM
	lvm.Log = log
	r := run{Hook: h, lvm: &lvm, log: log, dom: dom}
	if act == doMarkIncoming && h.Handover != nil && len(dom.Disks) > 0 {
		// Reads only, bounded: not under the host lock, which other
		// hooks and the lock helper wait for meanwhile.
		r.holder = r.incomingHolder(ctx)
	}

	if act == doDeactivate {
		if refs := r.stoppedRefs(); allKilled(refs, h.killedVGs(log)) {
			// Nothing for lvm: not even the host lock is needed.
			err := r.releaseKilled(refs)
			log.Info().Str("action", act.String()).Dur("took", time.Since(start)).Msg("hook done")
			return err
		}
	}
	unlock, err := h.State.Lock(ctx)
	if err != nil {
		if act == doDeactivate {
			// Stopped, but the host lock stayed busy (a mass shutdown)
			// or the call was cancelled: leave the LVs to the lock
			// helper rather than active with nothing to retry.
			r.leavePending()
		}
		return fail(fmt.Errorf("%s: %w", dom.Name, err))
	}
	defer unlock()

	switch act {
	case doMarkIncoming:
		err = r.markIncoming(ctx)
	case doActivate:
		err = r.activate(ctx)
		r.noteRefusal(err)
	case doDeactivate:
		err = r.deactivate(ctx)
	case doVerify:
		r.verify(ctx)
	}
	ev := log.Info()
	if err != nil {
		ev = log.Error().Err(err)
	}
	ev.Str("action", act.String()).Dur("took", time.Since(start)).Msg("hook done")
	return err
}

// noteRefusal keeps the last refused start of the domain for `lvhook check`
// (a refused autostart is otherwise only in libvirtd's journal), and drops
// it once a start succeeds. Best effort: the start's outcome is not changed.
func (r *run) noteRefusal(err error) {
	if err == nil {
		if rerr := r.State.RemoveRefused(r.dom.UUID); rerr != nil {
			r.log.Warn().Err(rerr).Msg("cannot remove the refused-start record")
		}
		return
	}
	rec := state.Refused{Name: r.dom.Name, UUID: r.dom.UUID, Line: lvmlock.OneLine(err.Error())}
	if serr := r.State.SaveRefused(rec); serr != nil {
		r.log.Warn().Err(serr).Msg("cannot record the refused start for lvhook check")
	}
}

// run is the work of one hook call.
type run struct {
	*Hook
	lvm *lvmlock.Client
	log zerolog.Logger
	dom *domxml.Domain
	// noHandover says why an incoming migration got no lock handover; a
	// refusal of the ordinary start that follows repeats it.
	noHandover string
	// changes is what this call's activations changed.
	changes []lvmlock.Change
	// holder is the sanlock host_id holding the domain's lease at an
	// incoming migration's migrate begin (0: unknown).
	holder int
	// lockspaceWaited is how long a start waited in vain for a starting
	// lockspace (waitLockspace); 0 when it did not wait.
	lockspaceWaited time.Duration
}

// verify is reconnect and unknown ops: compare each LV's mode with what the
// running domain needs, log what differs, and record the domain so that its
// release knows its LVs. It changes no lock and never fails.
func (r *run) verify(ctx context.Context) {
	rec, found, err := r.State.Load(state.DomainsDir, r.dom.UUID)
	if err != nil {
		r.log.Warn().Err(err).Msg("domain record unreadable")
	}
	alive, dead := splitKilled(r.dom.Refs(), r.killedVGs(r.log))
	if len(dead) > 0 {
		r.log.Warn().Str("lvs", lvmlock.JoinRefs(dead)).Msg("VG killed on this host (lease storage lost): these LVs are not verified")
	}
	if len(alive) == 0 {
		return
	}
	st, err := r.lvm.State(ctx, true, lvmlock.VGsOf(alive)...)
	if err != nil {
		r.log.Error().Err(err).Msg("cannot read lock state; nothing verified")
		return
	}
	disks, err := r.managedDisks(st, slices.DeleteFunc(slices.Clone(r.dom.Disks), func(d domxml.Disk) bool { return slices.Contains(dead, d.Ref) }))
	if err != nil {
		r.log.Error().Err(err).Msg("nothing verified")
		return
	}
	mismatches := 0
	for _, d := range disks {
		got := st.Mode(d.Ref)
		ok := got == d.Mode || rec.Incoming && got == lvmlock.ModeSh
		if !ok {
			mismatches++
			r.log.Warn().Str("vg", d.VG).Str("lv", d.LV).Stringer("want", d.Mode).Stringer("got", got).
				Msg("lock mode differs from what the running domain needs; left to the lock helper")
		}
	}
	r.log.Info().Int("lvs", len(disks)).Int("mismatches", mismatches).Msg("verified")
	if !found {
		rec = state.Record{Name: r.dom.Name, UUID: r.dom.UUID}
		for _, d := range disks {
			rec.LVs = append(rec.LVs, state.RecordLV{VG: d.VG, LV: d.LV, Mode: d.Mode})
		}
		if err := r.State.Save(state.DomainsDir, rec); err != nil {
			r.log.Warn().Err(err).Msg("cannot save domain record")
		}
	}
}

// recordedDomain is the domain lvhook recorded under name, for a release
// whose XML cannot be read; cause is why not.
func (h *Hook) recordedDomain(name string, cause error) (*domxml.Domain, error) {
	recs, err := h.State.All(state.DomainsDir)
	for _, rec := range recs {
		if rec.Name == name {
			h.Log.Warn().Err(cause).Str("domain", name).Str("uuid", rec.UUID).
				Msg("domain XML unusable at release: deactivating the LVs of lvhook's record")
			return &domxml.Domain{Name: rec.Name, UUID: rec.UUID}, nil
		}
	}
	return nil, errors.Join(fmt.Errorf("%s stopped, but its XML cannot be read and lvhook has no record of it: %w", name, cause), err)
}
