package migration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/lvhook/lvhook/config"
	"github.com/lvhook/lvhook/domxml"
	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/peer"
	"github.com/lvhook/lvhook/state"
	"github.com/lvhook/lvhook/virt"
)

// Helper is the lock helper of one host: it answers peers' downgrade
// requests and reconciles lock modes (reconcile.go).
type Helper struct {
	Config config.Config
	// Host is this host's name, as peers know it.
	Host  string
	LVM   *lvmlock.Client
	State *state.State
	Log   zerolog.Logger
	// Now is the clock; tests replace it.
	Now func() time.Time
	// JobFlags reads the flags of a running domain's current job (an
	// offline migration is no handover); nil reads libvirt's status file.
	JobFlags func(name string) (virt.JobFlags, error)
	// ReconnectMin and ReconnectMax pace Run's reconnections to libvirtd
	// (default 1 s doubling up to 30 s).
	ReconnectMin, ReconnectMax time.Duration

	mu sync.Mutex
	lv virt.Libvirt // nil while libvirtd is not connected
	// downgrades counts the downgrades granted; downgradedAt maps a
	// domain to the count at its last one. A reconciliation skips a
	// domain downgraded after it read libvirt (its view is then stale).
	downgrades   uint64
	downgradedAt map[string]uint64
	// reservations: per domain, the destination that reserved the
	// handover of its outgoing migration job (reserve.go); grants: to
	// which peer and for which job the LVs were then handed over.
	reservations map[string]reservation
	grants       map[string]grant
	due          map[string]*dueDomain
	lastPass     time.Time
	problems     map[string][]state.Problem
	// killedSeen: the killed VGs already reported, with their kill's start.
	killedSeen map[string]time.Time
}

type grant struct {
	peer string
	job  uint64 // libvirt's start of the job (asyncStarted)
}

// NewHelper returns the lock helper of host.
func NewHelper(cfg config.Config, host string, lvm *lvmlock.Client, state *state.State, log zerolog.Logger) *Helper {
	return &Helper{Config: cfg, Host: host, LVM: lvm, State: state, Log: log}
}

func (h *Helper) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

func (h *Helper) libvirt() virt.Libvirt {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lv
}

// Connected makes lv the helper's libvirt connection and reconciles every
// domain: events may have been lost while it was away.
func (h *Helper) Connected(ctx context.Context, lv virt.Libvirt) {
	h.mu.Lock()
	h.lv = lv
	h.mu.Unlock()
	h.Log.Info().Msg("connected to libvirt")
	h.ReconcileAll(ctx)
}

// Disconnected forgets the libvirt connection; until the next Connected,
// every downgrade request is refused and nothing is reconciled.
func (h *Helper) Disconnected() {
	h.mu.Lock()
	h.lv = nil
	h.mu.Unlock()
}

// Downgrade answers peer's request: yes only when this host's libvirt shows
// the domain running with an outgoing migration job, peer reserved that
// job's handover (Reserve, at its migrate begin), and every LV asked is one
// of the domain's disks; the LVs held ex here are then converted to sh. An LV
// already sh counts as done, so a repeated request (a lost answer) gets yes.
func (h *Helper) Downgrade(ctx context.Context, from string, req peer.Request) (ans peer.Answer) {
	log, refuse, done := h.answering(from, req, &ans)
	defer done("downgrade request answered")
	dom, why := h.examine(ctx, peer.DowngradePath, req)
	if dom == nil {
		return refuse("%s", why)
	}
	log = log.With().Str("domain", dom.Name).Logger()
	var refs []lvmlock.Ref
	needs := map[lvmlock.Ref]lvmlock.Mode{}
	for _, r := range req.LVs {
		ref := lvmlock.Ref{VG: r.VG, LV: r.LV}
		i := slices.IndexFunc(dom.Disks, func(d domxml.Disk) bool { return d.Ref == ref })
		if i < 0 {
			return refuse("%s is not a disk of %s on %s", ref, dom.Name, h.Host)
		}
		if !slices.Contains(refs, ref) {
			refs = append(refs, ref)
			needs[ref] = dom.Disks[i].Mode
		}
	}
	killed := h.killedVGs()
	for _, ref := range refs {
		if _, ok := killed[ref.VG]; ok {
			return refuse("VG %s was killed on %s (lease storage lost): its LVs are not lvmlockd's to hand over", ref.VG, h.Host)
		}
	}
	jobID, why := h.reservedFor(req.UUID, dom.Name, from)
	if why != "" {
		return refuse("%s", why)
	}
	h.mu.Lock()
	g, granted := h.grants[req.UUID]
	h.mu.Unlock()
	// Handed over already in this job: to peer, the one that reserved it.
	thisJob := granted && g.job == jobID

	h.mu.Lock()
	h.downgrades++
	if h.downgradedAt == nil {
		h.downgradedAt = map[string]uint64{}
	}
	h.downgradedAt[req.UUID] = h.downgrades
	h.mu.Unlock()

	unlock, err := h.State.Lock(ctx)
	if err != nil {
		return refuse("%v", err)
	}
	defer unlock()
	lvm := *h.LVM
	lvm.Log = log
	st, err := lvm.State(ctx, true, lvmlock.VGsOf(refs)...)
	if err != nil {
		return refuse("cannot read the lock state on %s: %v", h.Host, err)
	}
	// An LV still sh from an earlier migration (cancelled, or the
	// destination's deactivation failed) must first be ex again: that proves
	// no other host holds it, so that this destination makes two sharers,
	// not three.
	var stale []lvmlock.Target
	for _, ref := range refs {
		if st.Mode(ref) == lvmlock.ModeSh && needs[ref] == lvmlock.ModeEx && !thisJob {
			stale = append(stale, lvmlock.Target{Ref: ref, Mode: lvmlock.ModeEx})
		}
	}
	if len(stale) > 0 {
		if _, err := lvm.Convert(ctx, st, stale); err != nil {
			return refuse("%s is still shared on %s from before this migration and another host holds it (%s); see lvhook check",
				lvmlock.JoinRefs(lvmlock.RefsOf(stale)), h.Host, lvmlock.Reason(err))
		}
		if st, err = lvm.State(ctx, true, lvmlock.VGsOf(refs)...); err != nil {
			return refuse("cannot read the lock state on %s: %v", h.Host, err)
		}
	}
	var targets []lvmlock.Target
	for _, ref := range refs {
		info, ok := st.LVs[ref]
		switch mode := st.Mode(ref); {
		case !ok || !info.Shared():
			// No lvmlockd lock here to hand over: a local VG's LV, or
			// a path that only looks like one.
			continue
		case mode == lvmlock.ModeNone:
			// Never activate: a source that does not hold the LV has
			// nothing to hand over.
			return refuse("%s is not active on %s", ref, h.Host)
		case mode == lvmlock.ModeEx:
			if why := info.SharedActivationProblem(); why != "" {
				return refuse("%s is %s, which cannot be shared", ref, why)
			}
			targets = append(targets, lvmlock.Target{Ref: ref, Mode: lvmlock.ModeSh})
		}
	}
	if _, err := lvm.Activate(ctx, st, targets); err != nil {
		return refuse("converting to shared on %s failed: %v", h.Host, err)
	}
	h.mu.Lock()
	if h.grants == nil {
		h.grants = map[string]grant{}
	}
	h.grants[req.UUID] = grant{peer: from, job: jobID}
	// Watch the job: a migration cancelled or failed before the guest was
	// paused ends with no lifecycle event on this host (no
	// RESUMED_MIGRATED), so only the job's end tells that the LVs must be
	// ex again here.
	d := h.dueLocked(req.UUID, dom.Name)
	d.delay, d.next = retryMin, h.now().Add(retryMin)
	h.mu.Unlock()
	ans.Granted = true
	return ans
}

// answering starts the answer to peer's request in *ans: the log with the
// request's fields, refuse, which sets the reason and returns *ans, and
// done, which logs the decision as msg.
func (h *Helper) answering(from string, req peer.Request, ans *peer.Answer) (zerolog.Logger, func(string, ...any) peer.Answer, func(string)) {
	start := h.now()
	log := h.Log.With().Str("peer", from).Str("domain", req.Domain).Str("uuid", req.UUID).Logger()
	*ans = peer.Answer{Host: h.Host}
	refuse := func(format string, args ...any) peer.Answer {
		ans.Reason = fmt.Sprintf(format, args...)
		return *ans
	}
	done := func(msg string) {
		ev := log.Info()
		if !ans.Granted {
			ev = log.Warn()
		}
		ev.Bool("granted", ans.Granted).Str("reason", ans.Reason).Dur("took", h.now().Sub(start)).Msg(msg)
	}
	return log, refuse, done
}

// examine is what every peer request needs: well-formed (peerreq.go), time left,
// a libvirt connection, and the domain running here with an outgoing
// migration job. It returns the domain, or nil and why not.
func (h *Helper) examine(ctx context.Context, path string, req peer.Request) (*domxml.Domain, string) {
	// The peer server checked already; a caller in this process did not.
	if err := req.Check(path); err != nil {
		return nil, fmt.Sprintf("malformed request: %v", err)
	}
	if ctx.Err() != nil {
		return nil, "request expired before it was examined"
	}
	lv := h.libvirt()
	if lv == nil {
		return nil, fmt.Sprintf("the lock helper on %s is not connected to libvirt", h.Host)
	}
	dom, err := h.outgoing(ctx, lv, req.UUID)
	if err != nil {
		return nil, err.Error()
	}
	return dom, ""
}

// outgoing returns the domain uuid when libvirt shows it active
// here with an outgoing migration job, else an error saying why not.
func (h *Helper) outgoing(ctx context.Context, lv virt.Libvirt, uuid string) (*domxml.Domain, error) {
	state, err := lv.DomainState(ctx, uuid)
	switch {
	case errors.Is(err, virt.ErrNoDomain):
		return nil, fmt.Errorf("domain %s does not run on %s", uuid, h.Host)
	case err != nil:
		return nil, fmt.Errorf("libvirt on %s: %w", h.Host, err)
	case state != virt.StateRunning && state != virt.StatePaused: // a crashed domain cannot migrate
		return nil, fmt.Errorf("domain %s is %s on %s", uuid, state, h.Host)
	}
	job, err := lv.DomainJob(ctx, uuid)
	switch {
	case errors.Is(err, virt.ErrNoDomain):
		return nil, fmt.Errorf("domain %s does not run on %s", uuid, h.Host)
	case err != nil:
		return nil, fmt.Errorf("libvirt on %s: %w", h.Host, err)
	case job.Kind != virt.JobMigrationOut:
		return nil, fmt.Errorf("domain %s has no outgoing migration job on %s (job: %s)", uuid, h.Host, job.Kind)
	}
	x, err := lv.DomainXML(ctx, uuid)
	if err != nil {
		return nil, fmt.Errorf("libvirt on %s: %w", h.Host, err)
	}
	dom, err := domxml.Parse(x, h.Config.StoragePoolDir)
	switch {
	case err != nil:
		return nil, err
	case dom.UUID != uuid:
		return nil, fmt.Errorf("libvirt on %s returned the XML of %s for %s", h.Host, dom.UUID, uuid)
	case dom.OptedOut:
		return nil, fmt.Errorf("%s opted out of lvhook", dom.Name)
	}
	return dom, nil
}
