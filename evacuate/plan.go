package evacuate

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/lvhook/lvhook/config"
	"github.com/lvhook/lvhook/domxml"
	"github.com/lvhook/lvhook/peer"
	"github.com/lvhook/lvhook/virt"
)

// Domain is one active domain of this host, as the evacuation read it.
type Domain struct {
	Name, UUID string
	// Priority orders the evacuation: highest migrated first, and stopped
	// last among those that must stop.
	Priority int
	// Fallback is what happens when it cannot be migrated: its metadata's,
	// else evacuate.fallback.
	Fallback string
	// Memory is what it needs on a peer, in bytes.
	Memory uint64
	State  virt.DomainState
	Job    virt.JobKind
	// CannotMove says why it cannot be live-migrated at all ("" when it
	// can): an LV that cannot be shared, a crashed guest, an XML or a
	// memory size that cannot be read.
	CannotMove string
	// MetaErr: its lvhook metadata could not be read; the defaults apply.
	MetaErr string
	// Disks are its LVs with the mode each needs, when its XML was read.
	Disks      []domxml.Disk
	DisksKnown bool
}

// Peer is a configured peer and what it answered.
type Peer struct {
	config.Peer
	// URI is its libvirtd for the migration (config.Peer.MigrationURI).
	URI      string
	Capacity peer.CapacityAnswer
	// Err says why it cannot take domains: not answered, libvirt not up
	// there, no usable URI.
	Err string
}

// usable tells whether the peer may take domains at all.
func (p Peer) usable() bool { return p.Err == "" && !p.Capacity.Draining }

// What a step does with a domain.
const (
	ActionMigrate     = "migrate"
	ActionManagedSave = domxml.FallbackManagedSave
	ActionShutdown    = domxml.FallbackShutdown
	ActionLeave       = domxml.FallbackLeave
	// ActionSkip: not this evacuation's to move (an incoming migration, or
	// an outgoing one another client started).
	ActionSkip = "skip"
	// ActionDestroy is no plan: what a shutdown becomes past its bound.
	ActionDestroy = "destroy"
)

// Step is one domain's plan.
type Step struct {
	Domain
	// Action is ActionMigrate with Target, the domain's fallback, or
	// ActionSkip.
	Action string
	Target string
	// Reason says why it is not migrated.
	Reason string
}

// PlanOptions are the choices of one evacuation.
type PlanOptions struct {
	// To, when set, is the one peer the domains may go to.
	To string
	// Margin is kept free on a peer beyond the domains sent there, bytes.
	Margin uint64
}

// Plan decides, without any I/O, what happens to each domain: the domains
// in the order they are evacuated (priority, highest first, then name), each
// with a peer to migrate to or its fallback. A peer takes a domain when it
// is usable (answered within its bound, libvirt up, not draining), is --to
// if given, and has the domain's memory plus the margin free beyond what
// this plan already sends it; among those, the one that was sent the
// fewest domains, then the one with the most memory left, then by name: so
// domains spread over the peers.
func Plan(domains []Domain, peers []Peer, opts PlanOptions) []Step {
	order := slices.Clone(domains)
	slices.SortStableFunc(order, func(a, b Domain) int {
		return cmp.Or(cmp.Compare(b.Priority, a.Priority), strings.Compare(a.Name, b.Name), strings.Compare(a.UUID, b.UUID))
	})
	counts, used := make([]int, len(peers)), make([]uint64, len(peers))
	steps := make([]Step, 0, len(order))
	for _, d := range order {
		st := Step{Domain: d, Action: d.Fallback}
		switch {
		case d.Job == virt.JobMigrationIn:
			st.Action, st.Reason = ActionSkip, "an incoming migration: it is arriving here"
		case d.Job == virt.JobMigrationOut:
			st.Action, st.Reason = ActionSkip, "already migrating out (a job another client started)"
		case d.CannotMove != "":
			st.Reason = d.CannotMove
		default:
			need := d.Memory + opts.Margin
			best := -1
			for i, p := range peers {
				if !p.usable() || opts.To != "" && !strings.EqualFold(p.Name, opts.To) || free(p, used[i]) < need {
					continue
				}
				if best < 0 || cmp.Or(cmp.Compare(counts[i], counts[best]),
					cmp.Compare(free(peers[best], used[best]), free(p, used[i])), strings.Compare(p.Name, peers[best].Name)) < 0 {
					best = i
				}
			}
			if best < 0 {
				st.Reason = noTarget(d, peers, used, opts)
				break
			}
			counts[best]++
			used[best] += d.Memory
			st.Action, st.Target = ActionMigrate, peers[best].Name
		}
		steps = append(steps, st)
	}
	return steps
}

// free is a peer's free memory less what the plan already sends it.
func free(p Peer, used uint64) uint64 {
	f := uint64(max(p.Capacity.FreeMemoryBytes, 0))
	return f - min(f, used)
}

// noTarget says why no peer takes d: each peer considered, with its state.
func noTarget(d Domain, peers []Peer, used []uint64, opts PlanOptions) string {
	var why []string
	for i, p := range peers {
		if opts.To != "" && !strings.EqualFold(p.Name, opts.To) {
			continue
		}
		switch {
		case p.Err != "":
			why = append(why, p.Name+" "+p.Err)
		case p.Capacity.Draining:
			why = append(why, p.Name+" draining (evacuating itself)")
		default:
			why = append(why, fmt.Sprintf("%s %s free", p.Name, Size(free(p, used[i]))))
		}
	}
	if len(why) == 0 {
		return "no peer is configured ([[daemon.peer]])"
	}
	need := Size(d.Memory)
	if opts.Margin > 0 {
		need = fmt.Sprintf("%s with the %s margin", Size(d.Memory+opts.Margin), Size(opts.Margin))
	}
	return fmt.Sprintf("no peer can take it (it needs %s): %s", need, strings.Join(why, ", "))
}

// Size renders bytes for an operator: "4.0 GiB", "256 MiB".
func Size(b uint64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%d MiB", b>>20)
	}
	return fmt.Sprintf("%d KiB", b>>10)
}
