package migration

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/peer"
)

var (
	modelSeed  = flag.Int64("seed", -1, "TestModel: replay this seed alone, with its trace and logs")
	modelRuns  = flag.Int("runs", 0, "TestModel: number of seeded runs (default 2000; 200 with -short)")
	modelSteps = flag.Int("steps", 0, "TestModel: random steps per run before quiescence (default 80)")
)

// modelResult is one run of the model.
type modelResult struct {
	seed       int64
	violations []string
	trace      []string
	stats      simStats
}

func runModel(t testing.TB, seed int64, steps int, logs bool) modelResult {
	var log = newSimLogger(nil)
	if logs {
		log = newSimLogger(os.Stderr)
	}
	s := newSim(seed, t.TempDir(), log)
	s.run(steps)
	return modelResult{seed: seed, violations: s.violations, trace: s.trace, stats: s.stats}
}

func report(t *testing.T, r modelResult) {
	t.Helper()
	tail := r.trace
	if len(tail) > 400 {
		tail = tail[len(tail)-400:]
	}
	t.Errorf("model seed %d: %d violation(s):\n  %s\nlast steps:\n%s\nreplay: go test ./migration -run 'TestModel$' -seed %d -v",
		r.seed, len(r.violations), strings.Join(r.violations, "\n  "), strings.Join(tail, "\n"), r.seed)
}

// TestModel runs the seeded simulation of sim_test.go many times, in
// parallel, and checks the invariant after every step and at the end of each
// run. Seeds are 1..runs, so a failure is replayed with -seed N.
func TestModel(t *testing.T) {
	steps := *modelSteps
	if steps <= 0 {
		steps = 80
	}
	if *modelSeed >= 0 {
		r := runModel(t, *modelSeed, steps, testing.Verbose())
		if len(r.violations) > 0 {
			report(t, r)
		}
		t.Logf("seed %d: %+v", *modelSeed, r.stats)
		return
	}
	runs := *modelRuns
	if runs <= 0 {
		runs = 2000
		if testing.Short() {
			runs = 200
		}
	}
	start := time.Now()
	var mu sync.Mutex
	var total simStats
	var failed []modelResult
	workers := 4 * runtime.GOMAXPROCS(0) // runs wait on file system calls more than on the CPU
	seeds := make(chan int64)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seed := range seeds {
				r := runModel(t, seed, steps, false)
				mu.Lock()
				total.add(r.stats)
				if len(r.violations) > 0 && len(failed) < 3 {
					failed = append(failed, r)
				}
				mu.Unlock()
			}
		}()
	}
	for seed := int64(1); seed <= int64(runs); seed++ {
		seeds <- seed
	}
	close(seeds)
	wg.Wait()
	for _, r := range failed {
		report(t, r)
	}
	t.Logf("model: %d runs, %d steps (%d nested), %d violating runs, %s; %s",
		runs, total.steps, total.nested, len(failed), time.Since(start).Round(time.Millisecond), describeStats(total))
	// The simulation must have exercised what it claims to.
	for what, n := range map[string]int{
		"completed migrations": total.migrationsDone, "cancelled migrations": total.migrationsCancelled,
		"refused starts": total.startsRefused, "handovers granted": total.handoverYes,
		"forged requests granted": total.forgedGranted, "refused deactivations": total.anFailures,
		"libvirtd restarts": total.libvirtdRestarts, "lock helper restarts": total.daemonRestarts,
		"offline migrations": total.offline, "stale markers": total.staleMarkers, "hosts without peers": total.noPeerHosts,
		"evacuations": total.evacuations, "domains migrated by an evacuation": total.evacMigrated,
		"domains an evacuation left running": total.evacLeft, "domains an evacuation stopped": total.evacShut,
		"lost lease storages": total.losses, "domains destroyed by kill-vg": total.lossDestroys,
		"starts elsewhere after a kill": total.lossStarts, "recoveries": total.recoveries,
	} {
		if n == 0 && runs >= 100 {
			t.Errorf("the model never produced %s", what)
		}
	}
}

func describeStats(s simStats) string {
	return fmt.Sprintf("starts %d (refused %d), stops %d, migrations %d (done %d, cancelled %d, prepare refused %d), "+
		"handovers granted %d, forged requests %d (granted %d), offline migrations %d, stale markers %d, hosts without peers %d, "+
		"libvirtd restarts %d, lock helper restarts %d, refused -an %d, reserve requests %d for %d migrate begins, "+
		"evacuations %d (migrated %d, fallbacks %d: left %d, stopped %d), "+
		"lease storages lost %d (domains destroyed by kill-vg %d, started elsewhere %d, recoveries %d)",
		s.starts, s.startsRefused, s.stops, s.migrations, s.migrationsDone, s.migrationsCancelled, s.prepareFailed,
		s.handoverYes, s.forged, s.forgedGranted, s.offline, s.staleMarkers, s.noPeerHosts, s.libvirtdRestarts, s.daemonRestarts, s.anFailures,
		s.reserveAsks, s.migrateBegins, s.evacuations, s.evacMigrated, s.evacFallbacks, s.evacLeft, s.evacShut,
		s.losses, s.lossDestroys, s.lossStarts, s.recoveries)
}

// TestModelDeterministic: a seed replays exactly, which is what makes a
// failing seed worth reporting.
func TestModelDeterministic(t *testing.T) {
	evacuations, kills := 0, 0
	for _, seed := range []int64{12, 33} {
		a := runModel(t, seed, 120, false)
		evacuations += a.stats.evacuations
		kills += a.stats.lossDestroys
		b := runModel(t, seed, 120, false)
		if diff := cmp.Diff(a.trace, b.trace); diff != "" {
			t.Errorf("seed %d replays differently (-first +second):\n%s", seed, diff)
		}
		if a.stats != b.stats {
			t.Errorf("seed %d: stats %+v then %+v", seed, a.stats, b.stats)
		}
	}
	// The evacuation runs goroutines of its own (its workers, its peer
	// questions), and so does kill-vg (its wipes, its destroys): a replay
	// must cover both.
	if evacuations == 0 {
		t.Error("no seed evacuated a host: pick one that does")
	}
	if kills == 0 {
		t.Error("no seed had kill-vg destroy a domain: pick one that does")
	}
}

// finish runs activity a to its end without faults, taking the first
// enabled step each time.
func (s *sim) finish(a activity) {
	s.begin(a)
	for !a.done() && !s.failed() {
		opts := a.options(s)
		if len(opts) == 0 {
			break
		}
		s.do(opts[0])
	}
	s.do(option{name: "activity over", run: func() {}})
}

// drainEvents has every lock helper handle its queued events.
func (s *sim) drainEvents() {
	for _, h := range s.hosts {
		for len(h.events) > 0 {
			ev := h.events[0]
			h.events = h.events[1:]
			s.do(option{name: h.name + ": " + ev.Kind.String(), run: func() { h.helper.HandleEvent(s.daemonCtx(h), ev) }})
		}
	}
}

// TestModelLiveMigration walks the model through one start and one live
// migration without faults, step by step in libvirt's order, and checks the
// end state: the destination alone holds the LVs ex.
func TestModelLiveMigration(t *testing.T) {
	s := newSim(1, t.TempDir(), newSimLogger(nil))
	s.faults = false
	d := s.doms[0] // vm1: two LVs of vg0 and one of a local VG
	src, dst := s.hosts[0], s.hosts[1]
	s.finish(&startAct{d: d, h: src})
	s.finish(&migAct{d: d, s: src, t: dst})
	s.drainEvents()
	if s.failed() {
		t.Fatalf("violations: %v\n%s", s.violations, strings.Join(s.trace, "\n"))
	}
	if bad := s.settled(); len(bad) > 0 {
		t.Errorf("after the migration: %v\n%s", bad, strings.Join(s.trace, "\n"))
	}
	for _, disk := range d.disks {
		if diff := cmp.Diff(map[int]lvmlock.Mode{dst.id: lvmlock.ModeEx}, s.cluster.Holders(disk.VG, disk.LV)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", disk.Ref, diff)
		}
	}
	if s.stats.migrationsDone != 1 || s.stats.handoverYes != 1 {
		t.Errorf("stats %+v: want one migration done through one handover", s.stats)
	}
}

// TestModelHolderFirst64: at 64 hosts, the destination's migrate begin reads
// from sanlock that the source holds the domain's LV and asks it alone: one
// reservation request, not one per peer. Without the lookup (no sanlock,
// so the holder is unknown) every other host is asked; with a lease read
// that names another host (stale), that host refuses and the others are
// asked, the holder not again. Either way the migration completes through
// one downgrade, and the invariant holds.
func TestModelHolderFirst64(t *testing.T) {
	const hosts = 64
	for _, tc := range []struct {
		name    string
		sanlock func(s *sim, src, dst *simHost) *lvmlock.Sanlock
		reserve int
		first   string // the peer asked alone first
	}{
		{"holder known", func(s *sim, _, dst *simHost) *lvmlock.Sanlock {
			return &lvmlock.Sanlock{Runner: &checkRunner{s: s, h: dst}}
		}, 1, "host17"},
		{"holder unknown", func(*sim, *simHost, *simHost) *lvmlock.Sanlock { return nil }, hosts - 1, ""},
		{"stale lease read names another host", func(s *sim, src, dst *simHost) *lvmlock.Sanlock {
			return &lvmlock.Sanlock{Runner: &renamingRunner{inner: &checkRunner{s: s, h: dst}, from: src.id, to: 5}}
		}, hosts - 1, "host5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSimHosts(1, t.TempDir(), newSimLogger(nil), hosts)
			s.faults = false
			d := s.doms[0]
			src, dst := s.hosts[16], s.hosts[40]
			dst.hook.Sanlock = tc.sanlock(s, src, dst)
			s.finish(&startAct{d: d, h: src})
			reserves, downgrades := s.asked(peer.ReservePath), s.asked(peer.DowngradePath)
			sent := len(s.sent)
			s.finish(&migAct{d: d, s: src, t: dst})
			s.drainEvents()
			if s.failed() {
				t.Fatalf("violations: %v\n%s", s.violations, strings.Join(s.trace, "\n"))
			}
			reserves, downgrades = s.asked(peer.ReservePath)-reserves, s.asked(peer.DowngradePath)-downgrades
			t.Logf("%d hosts, %s: %d reserve and %d downgrade round trips for one live migration", hosts, tc.name, reserves, downgrades)
			if reserves != tc.reserve || downgrades != 1 {
				t.Errorf("%d reserve and %d downgrade requests, want %d and 1", reserves, downgrades, tc.reserve)
			}
			if len(s.sent) == sent {
				t.Fatal("the migration sent no request")
			}
			asked := map[string]int{}
			for _, r := range s.sent[sent:] {
				if p, ok := strings.CutPrefix(r, peer.ReservePath+" "); ok {
					asked[p]++
				}
			}
			if first := s.sent[sent]; tc.first != "" && first != peer.ReservePath+" "+tc.first {
				t.Errorf("first request %q, want a reservation asked of %s", first, tc.first)
			}
			for p, n := range asked {
				if n != 1 || p == dst.name {
					t.Errorf("%s asked %d times to reserve", p, n)
				}
			}
			if s.stats.migrationsDone != 1 || s.stats.handoverYes != 1 {
				t.Errorf("stats %+v: want one migration done through one handover", s.stats)
			}
			if bad := s.settled(); len(bad) > 0 {
				t.Errorf("after the migration: %v", bad)
			}
			for _, disk := range d.disks {
				if diff := cmp.Diff(map[int]lvmlock.Mode{dst.id: lvmlock.ModeEx}, s.cluster.Holders(disk.VG, disk.LV)); diff != "" {
					t.Errorf("%s (-want +got):\n%s", disk.Ref, diff)
				}
			}
		})
	}
}

// renamingRunner gives inner's sanlock lease dumps with host_id from's ex
// holds shown as to's: a stale or wrong lease read.
type renamingRunner struct {
	inner    lvmlock.Runner
	from, to int
}

func (r *renamingRunner) Run(ctx context.Context, name string, args ...string) ([]byte, []byte, error) {
	out, errOut, err := r.inner.Run(ctx, name, args...)
	if name != "sanlock" || len(args) == 0 || args[0] != "direct" {
		return out, errOut, err
	}
	lines := strings.Split(string(out), "\n")
	for i, l := range lines {
		if f := strings.Fields(l); len(f) == 7 && f[4] == fmt.Sprintf("%04d", r.from) {
			lines[i] = strings.Replace(l, " "+f[4]+" ", fmt.Sprintf(" %04d ", r.to), 1)
		}
	}
	return []byte(strings.Join(lines, "\n")), errOut, err
}
