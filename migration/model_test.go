package migration

import (
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
	} {
		if n == 0 && runs >= 100 {
			t.Errorf("the model never produced %s", what)
		}
	}
}

func describeStats(s simStats) string {
	return fmt.Sprintf("starts %d (refused %d), stops %d, migrations %d (done %d, cancelled %d, prepare refused %d), "+
		"handovers granted %d, forged requests %d (granted %d), offline migrations %d, stale markers %d, hosts without peers %d, "+
		"libvirtd restarts %d, lock helper restarts %d, refused -an %d",
		s.starts, s.startsRefused, s.stops, s.migrations, s.migrationsDone, s.migrationsCancelled, s.prepareFailed,
		s.handoverYes, s.forged, s.forgedGranted, s.offline, s.staleMarkers, s.noPeerHosts, s.libvirtdRestarts, s.daemonRestarts, s.anFailures)
}

// TestModelDeterministic: a seed replays exactly, which is what makes a
// failing seed worth reporting.
func TestModelDeterministic(t *testing.T) {
	for _, seed := range []int64{7, 42} {
		a := runModel(t, seed, 120, false)
		b := runModel(t, seed, 120, false)
		if diff := cmp.Diff(a.trace, b.trace); diff != "" {
			t.Errorf("seed %d replays differently (-first +second):\n%s", seed, diff)
		}
		if a.stats != b.stats {
			t.Errorf("seed %d: stats %+v then %+v", seed, a.stats, b.stats)
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
	finish := func(a activity) {
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
	finish(&startAct{d: d, h: src})
	finish(&migAct{d: d, s: src, t: dst})
	for _, h := range s.hosts {
		for len(h.events) > 0 {
			ev := h.events[0]
			h.events = h.events[1:]
			s.do(option{name: h.name + ": " + ev.Kind.String(), run: func() { h.helper.HandleEvent(s.daemonCtx(h), ev) }})
		}
	}
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
