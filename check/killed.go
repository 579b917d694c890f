package check

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/state"
)

// A VG killed on this host (`lvhook kill-vg`, its lease storage lost) is
// reported as one problem, vg-killed, from kill-vg's record and one
// `dmsetup info` for the devices still open; lvm and sanlock are not asked
// about it (its storage may hang them), and its LVs get no other problem.

// killedRead is what check read of the killed VGs.
type killedRead struct {
	recs []state.Killed
	// unreadable: VGs whose record cannot be read, and why.
	unreadable map[string]string
	// devs are this host's device-mapper devices (read only when a VG is
	// killed); devsErr why they are unknown.
	devs    []lvmlock.DMDevice
	devsErr error
}

func (g *gathered) readKilled(ctx context.Context) {
	k := &g.killed
	if g.State == nil {
		return
	}
	var err error
	k.recs, err = g.State.AllKilled()
	k.unreadable = map[string]string{}
	for _, fe := range state.FileErrors(err) {
		if lvmlock.ValidName(fe.UUID) {
			k.unreadable[fe.UUID] = fe.Error()
		}
	}
	if len(k.recs)+len(k.unreadable) > 0 {
		k.devs, k.devsErr = g.LVM.DMDevices(ctx)
	}
}

func (k *killedRead) has(vg string) bool {
	_, bad := k.unreadable[vg]
	return bad || slices.ContainsFunc(k.recs, func(r state.Killed) bool { return r.VG == vg })
}

// without returns vgs but the killed ones.
func (k *killedRead) without(vgs []string) []string {
	return slices.DeleteFunc(slices.Clone(vgs), k.has)
}

// killedVGs reports each killed VG once, counted on every checked domain
// with an LV in it.
func (ev *evaluation) killedVGs() {
	k := ev.killed
	for _, rec := range k.recs {
		ev.addKilled(rec.VG, killedMessage(rec)+ev.openDevices(rec.VG))
	}
	for _, vg := range slices.Sorted(maps.Keys(k.unreadable)) {
		ev.addKilled(vg, fmt.Sprintf("VG %s was killed on this host by lvhook kill-vg (its lease storage lost), but its record cannot be read (%s)%s",
			vg, k.unreadable[vg], ev.openDevices(vg)))
	}
}

func (ev *evaluation) addKilled(vg, msg string) {
	p := Problem{Code: ProblemVGKilled, VG: vg, Message: msg,
		Advice: fmt.Sprintf("once the storage is back and nothing holds a device of %s open, run `lvhook kill-vg --recover %s` here; start its domains here after that, or on another host once this host's lease is dead there (`lvhook check` there: host-not-renewing, state dead)", vg, vg)}
	for _, d := range ev.rep.Domains {
		if slices.ContainsFunc(d.LVs, func(l LVReport) bool { return l.VG == vg }) {
			p.also = append(p.also, d.UUID)
		}
	}
	ev.add(p)
}

// killedMessage says when the VG was killed, whether every device of it
// is unwritable, and what became of its domains.
func killedMessage(rec state.Killed) string {
	var b strings.Builder
	fmt.Fprintf(&b, "VG %s lost its lease storage and lvhook kill-vg killed it on this host at %s", rec.VG, rec.Started.UTC().Format(time.RFC3339))
	switch {
	case rec.Finished.IsZero():
		b.WriteString("; kill-vg is still running")
	case rec.Verified:
		fmt.Fprintf(&b, "; every device of it has the error table (%d replaced): nothing here can write it", len(rec.Wiped))
	default:
		var left []string
		for _, d := range rec.Left {
			if d.Name == "" {
				left = append(left, d.Why)
			} else {
				left = append(left, d.Name+": "+d.Why)
			}
		}
		fmt.Fprintf(&b, "; kill-vg could not make every device unwritable (%s): lvmlockd keeps the VG's locks and the watchdog resets this host unless the storage comes back", strings.Join(left, ", "))
	}
	var stopped, running []string
	for _, d := range rec.Domains {
		if d.Destroyed {
			stopped = append(stopped, d.Name)
		} else {
			running = append(running, d.Name+" ("+d.Error+")")
		}
	}
	switch {
	case len(stopped)+len(running) == 0:
		b.WriteString("; no domain here used it")
	case len(stopped) > 0:
		b.WriteString("; domains stopped: " + strings.Join(stopped, ", "))
	}
	if len(running) > 0 {
		b.WriteString("; not stopped, running on error disks: " + strings.Join(running, ", "))
	}
	return b.String()
}

// openDevices names the devices of vg still open here ("" when none).
func (ev *evaluation) openDevices(vg string) string {
	k := ev.killed
	if k.devsErr != nil {
		return "; whether its devices are still open is unknown (" + lvmlock.OneLine(lvmlock.Reason(k.devsErr)) + ")"
	}
	var open []string
	for _, d := range k.devs {
		if d.LVM() && d.VG == vg && d.LV != "lvmlock" && d.Open > 0 {
			open = append(open, fmt.Sprintf("%s (%d)", d.Name, d.Open))
		}
	}
	if len(open) == 0 {
		return ""
	}
	return "; still open: " + strings.Join(open, ", ")
}
