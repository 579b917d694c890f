package evacuate

import (
	"fmt"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lvhook/lvhook/config"
	"github.com/lvhook/lvhook/domxml"
	"github.com/lvhook/lvhook/peer"
	"github.com/lvhook/lvhook/virt"
)

const gib = 1 << 30

// dom is a running domain of mem GiB with the shutdown fallback.
func dom(name string, prio int, mem float64) Domain {
	return Domain{Name: name, UUID: "uuid-" + name, Priority: prio, Memory: uint64(mem * gib), Fallback: ActionShutdown,
		State: virt.StateRunning}
}

// up is a reachable peer with free GiB free.
func up(name string, free float64) Peer {
	return Peer{Peer: config.Peer{Name: name}, URI: "qemu+tls://" + name + "/system",
		Capacity: peer.CapacityAnswer{Host: name, LibvirtUp: true, FreeMemoryBytes: int64(free * gib)}}
}

// planned renders steps as "name action target", in order.
func planned(steps []Step) []string {
	out := make([]string, len(steps))
	for i, s := range steps {
		out[i] = fmt.Sprintf("%s %s %s", s.Name, s.Action, s.Target)
		if s.Reason != "" {
			out[i] += ": " + s.Reason
		}
	}
	return out
}

func TestPlan(t *testing.T) {
	draining := up("host3", 64)
	draining.Capacity.Draining = true
	unreachable := Peer{Peer: config.Peer{Name: "host4"}, Err: "unreachable (context deadline exceeded)"}
	incoming, outgoing := dom("in", 0, 1), dom("out", 0, 1)
	incoming.Job, outgoing.Job = virt.JobMigrationIn, virt.JobMigrationOut
	thin := dom("thin", 5, 1)
	thin.CannotMove, thin.Fallback = "vg0/thin-root is a thin LV (its lock is its pool's, always exclusive): it cannot be shared for a live migration", ActionManagedSave
	leave := dom("keep", 0, 8)
	leave.Fallback = ActionLeave
	for _, tc := range []struct {
		name    string
		domains []Domain
		peers   []Peer
		opts    PlanOptions
		want    []string
	}{{
		name:    "priority order, highest first, then by name",
		domains: []Domain{dom("c", 0, 1), dom("b", 10, 1), dom("z", -5, 1), dom("a", 10, 1)},
		peers:   []Peer{up("host2", 64)},
		want:    []string{"a migrate host2", "b migrate host2", "c migrate host2", "z migrate host2"},
	}, {
		name:    "three domains spread over two peers: fewest assigned, then most free",
		domains: []Domain{dom("t1", 0, 1), dom("t2", 0, 1), dom("t3", 0, 1)},
		peers:   []Peer{up("host2", 8), up("host3", 6)},
		want:    []string{"t1 migrate host2", "t2 migrate host3", "t3 migrate host2"},
	}, {
		name:    "equal peers: by name",
		domains: []Domain{dom("t1", 0, 1), dom("t2", 0, 1)},
		peers:   []Peer{up("host3", 8), up("host2", 8)},
		want:    []string{"t1 migrate host2", "t2 migrate host3"},
	}, {
		name:    "memory margin: 4 GiB free does not take 4 GiB plus 256 MiB",
		domains: []Domain{dom("big", 0, 4)},
		peers:   []Peer{up("host2", 4)},
		opts:    PlanOptions{Margin: 256 << 20},
		want:    []string{"big shutdown : no peer can take it (it needs 4.2 GiB with the 256 MiB margin): host2 4.0 GiB free"},
	}, {
		name:    "no margin: it fits",
		domains: []Domain{dom("big", 0, 4)},
		peers:   []Peer{up("host2", 4)},
		want:    []string{"big migrate host2"},
	}, {
		name:    "what the plan sends a peer counts: the second goes elsewhere, the third nowhere",
		domains: []Domain{dom("a", 3, 2), dom("b", 2, 2), dom("c", 1, 2)},
		peers:   []Peer{up("host2", 3), up("host3", 2.5)},
		opts:    PlanOptions{Margin: 256 << 20},
		want: []string{"a migrate host2", "b migrate host3",
			"c shutdown : no peer can take it (it needs 2.2 GiB with the 256 MiB margin): host2 1.0 GiB free, host3 512 MiB free"},
	}, {
		name:    "--to: only that peer, while it has room",
		domains: []Domain{dom("a", 0, 3), dom("b", 0, 3), dom("c", 0, 3)},
		peers:   []Peer{up("host2", 64), up("host3", 7)},
		opts:    PlanOptions{To: "HOST3"},
		want: []string{"a migrate host3", "b migrate host3",
			"c shutdown : no peer can take it (it needs 3.0 GiB): host3 1.0 GiB free"},
	}, {
		name:    "draining and unreachable peers take nothing",
		domains: []Domain{dom("a", 0, 1), dom("b", 0, 1)},
		peers:   []Peer{up("host2", 64), draining, unreachable},
		want:    []string{"a migrate host2", "b migrate host2"},
	}, {
		name:    "only draining and unreachable peers: fallback, saying why",
		domains: []Domain{leave},
		peers:   []Peer{draining, unreachable},
		want: []string{"keep leave : no peer can take it (it needs 8.0 GiB): " +
			"host3 draining (evacuating itself), host4 unreachable (context deadline exceeded)"},
	}, {
		name:    "--to a draining peer",
		domains: []Domain{dom("a", 0, 1)},
		peers:   []Peer{up("host2", 64), draining},
		opts:    PlanOptions{To: "host3"},
		want:    []string{"a shutdown : no peer can take it (it needs 1.0 GiB): host3 draining (evacuating itself)"},
	}, {
		name:    "no peer",
		domains: []Domain{dom("a", 0, 1)},
		want:    []string{"a shutdown : no peer is configured ([[daemon.peer]])"},
	}, {
		name:    "migrations under way are skipped; a domain that cannot move gets its fallback at once",
		domains: []Domain{incoming, outgoing, thin},
		peers:   []Peer{up("host2", 64)},
		want: []string{"thin managedsave : " + thin.CannotMove,
			"in skip : an incoming migration: it is arriving here",
			"out skip : already migrating out (a job another client started)"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got := planned(Plan(tc.domains, tc.peers, tc.opts))
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Plan (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSize(t *testing.T) {
	for b, want := range map[uint64]string{0: "0 KiB", 4096: "4 KiB", 256 << 20: "256 MiB", gib: "1.0 GiB", 4*gib + 256<<20: "4.2 GiB"} {
		if got := Size(b); got != want {
			t.Errorf("Size(%d) = %q, want %q", b, got, want)
		}
	}
}

// TestFallbackNames: evacuate.fallback and a domain's fallback attribute
// take the same values (config cannot import domxml: each lists them).
func TestFallbackNames(t *testing.T) {
	if diff := cmp.Diff(domxml.Fallbacks, config.EvacuateFallbacks); diff != "" {
		t.Errorf("domxml.Fallbacks and config.EvacuateFallbacks differ (-domxml +config):\n%s", diff)
	}
	for _, f := range domxml.Fallbacks {
		if !slices.Contains([]string{ActionManagedSave, ActionShutdown, ActionLeave}, f) {
			t.Errorf("fallback %q is no action of evacuate", f)
		}
	}
}
