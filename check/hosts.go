package check

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/lvhook/lvhook/lvmlock"
)

// What check reads from sanlock: the hosts of each started lockspace (who
// stopped renewing its host lease: a crashed, hung or cut-off host), and,
// when the peers' lock helpers do not answer, the LV leases themselves (which
// host_id holds each LV).

// LockspaceHost is one host of a VG's sanlock lockspace.
type LockspaceHost struct {
	HostID int    `json:"host_id"`
	Name   string `json:"name,omitempty"`
	Self   bool   `json:"self,omitempty"`
	// State: live, failing (stopped renewing; its locks still hold), dead
	// (other hosts may take its locks) or free (left the lockspace).
	State lvmlock.HostState `json:"state"`
	// SilentSeconds: how long it had not renewed when this host last looked.
	SilentSeconds int `json:"silent_seconds"`
	// ExpiresInSeconds: for a failing host, about how long until its locks
	// may be taken.
	ExpiresInSeconds int `json:"expires_in_seconds,omitempty"`
}

// hostProblems reports every other host of a started lockspace that stopped
// renewing its host lease, with the checked LVs it holds.
func (ev *evaluation) hostProblems() {
	for _, vg := range slices.Sorted(maps.Keys(ev.hosts)) {
		self := ev.spaces[vg].HostID
		for _, id := range slices.Sorted(maps.Keys(ev.hosts[vg])) {
			h := ev.hosts[vg][id]
			st := h.State()
			if st != lvmlock.HostFailing && st != lvmlock.HostDead {
				continue
			}
			silent := int(h.Silent() / time.Second)
			if id == self {
				ev.add(Problem{Code: ProblemHostNotRenewing, VG: vg,
					Message: fmt.Sprintf("this host (host_id %d) has not renewed its own lease in the lockspace of VG %s for %d s: it is losing the shared storage; sanlock drops its locks 80 s after the last renewal and the watchdog then resets the host", id, vg, silent),
					Advice:  "check the path to the shared storage now (`multipath -ll`, `dmesg`, `sanlock client log_dump`); the domains running here are at risk"})
				continue
			}
			name, who := ev.hostName(vg, id), lvmlock.HostLabel(ev.knownName(vg, id), id)
			held, doms := ev.heldBy(vg, id)
			p := Problem{Code: ProblemHostNotRenewing, VG: vg}
			if len(doms) == 1 {
				p.Domain = doms[0]
			}
			for _, d := range ev.rep.Domains {
				if slices.Contains(doms, d.Name) {
					p.also = append(p.also, d.UUID)
				}
			}
			holds := ""
			if len(held) > 0 {
				holds = "; it holds " + strings.Join(held, ", ")
			}
			if st == lvmlock.HostFailing {
				left := int(h.ExpiresIn() / time.Second)
				p.Message = fmt.Sprintf("%s has not renewed its lease in the lockspace of VG %s for %d s (crashed, hung or cut off from the storage)%s; its locks hold for about %d s more",
					who, vg, silent, holds, left)
				p.Advice = fmt.Sprintf("make sure %s is down (power it off if unsure); after about %d s its domains can start elsewhere: `virsh start DOMAIN` on one host", name, left)
			} else {
				p.Message = fmt.Sprintf("%s has not renewed its lease in the lockspace of VG %s for %d s: sanlock takes it for dead and other hosts may take its locks%s",
					who, vg, silent, holds)
				p.Advice = fmt.Sprintf("start its domains on one host (`virsh start DOMAIN`) if %s is really down; this is reported until %s rejoins the lockspace (`vgchange --lock-start %s` there; run `lvhook check --all` there before it starts anything)", name, name, vg)
			}
			ev.add(p)
		}
	}
}

// heldBy lists the checked LVs of vg that host_id holds, and their domains.
func (ev *evaluation) heldBy(vg string, id int) (lvs, doms []string) {
	for _, d := range ev.rep.Domains {
		for _, l := range d.LVs {
			if l.VG != vg {
				continue
			}
			for _, h := range l.Others.Holders {
				// Peers' answers carry no host_id: match them by name.
				if h.HostID == id || h.HostID == 0 && h.Host == ev.hostName(vg, id) {
					lvs = append(lvs, fmt.Sprintf("%s/%s (%s, %s)", l.VG, l.LV, h.Mode, d.Name))
					if !slices.Contains(doms, d.Name) {
						doms = append(doms, d.Name)
					}
				}
			}
		}
	}
	return lvs, doms
}

// lockspaceHosts is the hosts part of a VG's LockspaceReport.
func (ev *evaluation) lockspaceHosts(vg string) []LockspaceHost {
	hosts, ok := ev.hosts[vg]
	if !ok {
		return nil
	}
	out := []LockspaceHost{}
	for _, id := range slices.Sorted(maps.Keys(hosts)) {
		h := hosts[id]
		lh := LockspaceHost{HostID: id, Name: ev.knownName(vg, id), Self: id == ev.spaces[vg].HostID,
			State: h.State(), SilentSeconds: int(h.Silent() / time.Second)}
		if lh.State == lvmlock.HostFailing {
			lh.ExpiresInSeconds = int(h.ExpiresIn() / time.Second)
		}
		out = append(out, lh)
	}
	return out
}
