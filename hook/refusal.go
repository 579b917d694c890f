package hook

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/lvhook/lvhook/domxml"
	"github.com/lvhook/lvhook/lvmlock"
)

// refusal turns a failed activation into the one line libvirt shows the
// operator: which domain, which LVs and VG, what happened, what to do.
func (r *run) refusal(ctx context.Context, verb string, targets []lvmlock.Target, err error) error {
	head := fmt.Sprintf("refusing to %s %s: ", verb, r.dom.Name)
	tail := ""
	if r.noHandover != "" && verb == "start" {
		tail = " (an incoming live migration got no lock handover: " + r.noHandover + ")"
	}
	var e *lvmlock.Error
	if !errors.As(err, &e) {
		return fmt.Errorf("%s%w%s", head, err, tail)
	}
	failed := failedRefs(e, lvmlock.KindOther)
	what := lvmlock.JoinRefs(failed)
	if what == "" {
		what = lvmlock.JoinRefs(lvmlock.RefsOf(targets))
	}
	vg := failedVG(e, failed, targets)
	var msg string
	switch e.Kind {
	case lvmlock.KindLockedByOtherHost:
		held := failedRefs(e, lvmlock.KindLockedByOtherHost)
		if len(held) == 0 {
			held = failed
		}
		where := "another host"
		id := e.Holder(held[0].VG, held[0].LV)
		if id == 0 {
			// The refusal is reported even when the hook's time is up.
			id = r.leaseHolder(context.WithoutCancel(ctx), held[0], holderLookupTimeout)
		}
		if id != 0 {
			name := ""
			if r.HostName != nil {
				name = r.HostName(id)
			}
			where = lvmlock.HostLabel(name, id)
		}
		if verb == "start" {
			msg = fmt.Sprintf("%s is active on %s (lvmlockd: LV locked by other host); is %s running elsewhere?",
				lvmlock.JoinRefs(held), where, r.dom.Name)
		} else {
			msg = fmt.Sprintf("%s is held exclusively by %s (lvmlockd: LV locked by other host) and the source did not downgrade it; is the lvhook lock helper running on the source?",
				lvmlock.JoinRefs(held), where)
		}
	case lvmlock.KindIncompatibleMode:
		msg = fmt.Sprintf("%s is active shared on this host and another host still holds it shared (a live migration not finished?); see lvhook check %s", what, r.dom.Name)
	case lvmlock.KindLockspaceNotStarted:
		msg = fmt.Sprintf("the lockspace of VG %s is not started on this host; run `vgchange --lock-start %s` (lvmlockd: %s)", vg, vg, e.Reason())
	case lvmlock.KindLockManagerError:
		msg = fmt.Sprintf("lvmlockd could not lock VG %s, even when asked again (lvmlockd: %s); check the shared storage and `sanlock client log_dump`, then retry", vg, e.Reason())
	case lvmlock.KindLockspaceStarting:
		msg = fmt.Sprintf("the lockspace of VG %s is still starting on this host; retry in a minute (lvmlockctl -i shows it)", vg)
		if r.lockspaceWaited > 0 {
			msg = fmt.Sprintf("the lockspace of VG %s is still starting on this host after %s (lockspace_wait); retry once `lvmlockctl -i` lists it, or see `sanlock client status`", vg, r.lockspaceWaited.Round(time.Second))
		}
	case lvmlock.KindLvmlockdNotRunning:
		msg = fmt.Sprintf("lvmlockd is not running on this host, so %s cannot be locked; run `systemctl start lvmlockd` then `vgchange --lock-start %s`", what, vg)
	case lvmlock.KindLVNotFound:
		msg = fmt.Sprintf("LV %s not found", what)
		if d := r.diskOf(func(d domxml.Disk) bool { return len(failed) > 0 && d.Ref == failed[0] }); d != nil {
			msg = fmt.Sprintf("disk %s: LV %s not found", d.Target, d.Ref)
		}
	case lvmlock.KindVGNotFound:
		msg = fmt.Sprintf("volume group %s not found", vg)
		if d := r.diskOf(func(d domxml.Disk) bool { return d.VG == vg }); d != nil {
			msg = fmt.Sprintf("disk %s: volume group %s not found (source %s)", d.Target, vg, d.Path)
		}
	case lvmlock.KindStorageFailed:
		msg = fmt.Sprintf("sanlock cannot use the lease storage of VG %s (lvmlockd: %s); check the shared storage and `sanlock client status`", vg, e.Reason())
	case lvmlock.KindSharedNotSupported:
		msg = fmt.Sprintf("%s cannot be activated shared (lvmlockd: %s); live migration and <shareable/> need a linear or striped LV", what, e.Reason())
	case lvmlock.KindTimeout:
		msg = fmt.Sprintf("`%s` did not finish in time (%s); what this call activated was rolled back", strings.Join(e.Args, " "), e.Reason())
	case lvmlock.KindNotInstalled:
		msg = fmt.Sprintf("%s not found in PATH; are lvm2 and lvm2-lockd installed?", e.Args[0])
	default:
		msg = fmt.Sprintf("`%s` failed: %s", strings.Join(e.Args, " "), e.Reason())
	}
	return &Refusal{Line: head + msg + tail, Err: err}
}

// Refusal is a refused start or migration, with the line for the operator.
type Refusal struct {
	Line string
	Err  error
}

func (e *Refusal) Error() string { return e.Line }
func (e *Refusal) Unwrap() error { return e.Err }

// diskOf returns the first disk of the domain that match accepts, or nil.
func (r *run) diskOf(match func(domxml.Disk) bool) *domxml.Disk {
	for i := range r.dom.Disks {
		if match(r.dom.Disks[i]) {
			return &r.dom.Disks[i]
		}
	}
	return nil
}

// holderLookupTimeout bounds the sanlock reads of leaseHolder.
const holderLookupTimeout = 5 * time.Second

// leaseHolder returns the sanlock host_id of another host holding ref, ex
// before sh, from the LV's lease (lvm 2.03.16 does not name the holder), or
// 0 when it cannot tell. A refusal pays for it, and an incoming migration's
// migrate begin (to ask the holder first): one lvs of the VG, one sanlock
// client status and one read of the lease, bounded together by bound and
// ctx.
func (r *run) leaseHolder(ctx context.Context, ref lvmlock.Ref, bound time.Duration) int {
	if r.Sanlock == nil {
		return 0
	}
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	id, err := func() (int, error) {
		lvs, _, err := r.lvm.LVs(ctx, ref.VG)
		if err != nil {
			return 0, err
		}
		i := slices.IndexFunc(lvs, func(lv lvmlock.LV) bool { return lv.Name == ref.LV })
		if i < 0 {
			return 0, fmt.Errorf("lvs does not list %s", ref)
		}
		spaces, err := r.Sanlock.Lockspaces(ctx)
		if err != nil {
			return 0, err
		}
		ls, ok := spaces[lvmlock.LockspaceName(ref.VG)]
		if !ok {
			return 0, fmt.Errorf("sanlock has no lockspace %s", lvmlock.LockspaceName(ref.VG))
		}
		leases, err := r.Sanlock.Leases(ctx, ls, lvs[i:i+1])
		if err != nil {
			return 0, err
		}
		if _, read := leases[lvs[i].UUID]; !read {
			return 0, fmt.Errorf("%s: no lease read (lv_lockargs %q)", ref, lvs[i].LockArgs)
		}
		sh := 0
		for _, l := range leases[lvs[i].UUID] {
			switch {
			case l.Mode == lvmlock.ModeEx:
				return l.HostID, nil
			case sh == 0:
				sh = l.HostID
			}
		}
		return sh, nil
	}()
	if err != nil {
		r.log.Debug().Err(err).Str("lv", ref.String()).Msg("holder not found in sanlock")
	}
	return id
}

// failedRefs lists the LVs the error names, of the given kind (KindOther: any).
func failedRefs(e *lvmlock.Error, kind lvmlock.Kind) []lvmlock.Ref {
	var refs []lvmlock.Ref
	for _, f := range e.Failures {
		if f.LV != "" && (kind == lvmlock.KindOther || f.Kind == kind) {
			refs = append(refs, lvmlock.Ref{VG: f.VG, LV: f.LV})
		}
	}
	return refs
}

func failedVG(e *lvmlock.Error, failed []lvmlock.Ref, targets []lvmlock.Target) string {
	for _, f := range e.Failures {
		if f.VG != "" {
			return f.VG
		}
	}
	if len(failed) > 0 {
		return failed[0].VG
	}
	// lvchange names one VG per call: take it from the command line.
	for _, a := range e.Args[1:] {
		if vg, _, ok := strings.Cut(a, "/"); ok {
			return vg
		}
	}
	if len(targets) > 0 {
		return targets[0].VG
	}
	return "?"
}
