package check

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/lvhook/lvhook/lvmlock"
)

// readSanlock reads this host's sanlock lockspaces and the hosts of each one
// of a started VG of the report: one `sanlock client status`, then one
// `sanlock client host_status` per VG. A failure leaves them unknown (noted
// on the lockspace), it does not stop the check.
func (g *gathered) readSanlock(ctx context.Context, vgs []string) {
	if g.Sanlock == nil || g.lockErr != nil {
		return
	}
	var started []string
	for _, vg := range vgs {
		if g.lockspaceOf(vg) == LockspaceStarted && g.vgs[vg].LockType == "sanlock" {
			started = append(started, vg)
		}
	}
	if len(started) == 0 {
		return
	}
	spaces, err := g.Sanlock.Lockspaces(ctx)
	if err != nil {
		for _, vg := range started {
			g.sanlockErr[vg] = err.Error()
		}
		return
	}
	for _, vg := range started {
		ls, ok := spaces[lvmlock.LockspaceName(vg)]
		if !ok {
			g.sanlockErr[vg] = fmt.Sprintf("sanlock client status does not list lockspace %s", lvmlock.LockspaceName(vg))
			continue
		}
		hosts, err := g.Sanlock.Hosts(ctx, ls.Name)
		if err != nil {
			g.sanlockErr[vg] = err.Error()
			continue
		}
		g.spaces[vg] = ls
		g.hosts[vg] = hosts
	}
}

// knownName names a sanlock host_id: the configured peer with that host_id,
// else the host name sanlock knows it by, else "".
func (g *gathered) knownName(vg string, id int) string {
	return cmp.Or(g.HostIDs[id], g.hosts[vg][id].HostName())
}

// hostName is knownName, else "host_id N".
func (g *gathered) hostName(vg string, id int) string {
	return cmp.Or(g.knownName(vg, id), fmt.Sprintf("host_id %d", id))
}

// leaseHolders is the HolderSource of last resort: the LV leases as sanlock
// wrote them on the lvmlock LV, one unsynchronised read per VG. A hold of a
// host that left the lockspace, or from before its last join (an older
// generation), is no hold. A VG whose leases cannot be read is left out,
// with the reason in errs.
func (g *gathered) leaseHolders(ctx context.Context, refs []lvmlock.Ref) (out map[lvmlock.Ref][]Holder, errs map[string]string) {
	byVG := map[string][]lvmlock.Ref{}
	for _, r := range refs {
		if _, ok := g.spaces[r.VG]; ok {
			byVG[r.VG] = append(byVG[r.VG], r)
		}
	}
	out, errs = map[lvmlock.Ref][]Holder{}, map[string]string{}
	for _, vg := range slices.Sorted(maps.Keys(byVG)) {
		var lvs []lvmlock.LV
		for _, r := range byVG[vg] {
			if lv, ok := g.st.LVs[r]; ok {
				lvs = append(lvs, lv)
			}
		}
		ls := g.spaces[vg]
		leases, err := g.Sanlock.Leases(ctx, ls, lvs)
		if err != nil {
			errs[vg] = err.Error()
			continue
		}
		hosts := g.hosts[vg]
		for _, r := range byVG[vg] {
			lv, ok := g.st.LVs[r]
			if !ok {
				continue
			}
			holds, read := leases[lv.UUID]
			if !read {
				continue // not in the dump: unknown
			}
			hs := []Holder{}
			for _, l := range holds {
				h, known := hosts[l.HostID]
				if known && (h.State() == lvmlock.HostFree || h.Generation != 0 && l.Generation != h.Generation) {
					continue
				}
				holder := Holder{Host: g.hostName(vg, l.HostID), Mode: l.Mode, HostID: l.HostID}
				if known {
					holder.State = h.State()
				}
				hs = append(hs, holder)
			}
			out[r] = hs
		}
	}
	return out, errs
}
