package evacuate

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lvhook/lvhook/config"
	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/virt"
	"github.com/lvhook/lvhook/virt/virttest"
)

// TestRunMigratesEverything: three domains spread over the two peers,
// highest priority first, each by libvirt's peer-to-peer migration to the
// peer's libvirtd (with its migrate_uri); a line as each begins and ends;
// host1 is marked evacuating meanwhile, not after.
func TestRunMigratesEverything(t *testing.T) {
	w := newWorld(t)
	w.capacity["host2"] = answer("host2", 8)
	w.capacity["host3"] = answer("host3", 6)
	w.run("web", 1, `priority="10"`, 2)
	w.run("db", 2, `priority="50" fallback="managedsave"`, 1)
	w.run("batch", 1, "", 1)
	rep := w.evacuate(Options{})
	want := []string{"db migrate host2 [migrate] migrated", "web migrate host3 [migrate] migrated", "batch migrate host2 [migrate] migrated"}
	if diff := cmp.Diff(want, results(rep)); diff != "" {
		t.Errorf("results (-want +got):\n%s", diff)
	}
	wantActions := []string{"migrate db qemu+tls://host2/system", "migrate web qemu+tls://host3/system tcp://10.0.0.3", "migrate batch qemu+tls://host2/system"}
	if diff := cmp.Diff(wantActions, w.lv.Actions()); diff != "" {
		t.Errorf("libvirt calls (-want +got):\n%s", diff)
	}
	if !rep.OK() || rep.Summary != (Summary{Domains: 3, Migrated: 3}) {
		t.Errorf("report %+v, want every domain migrated", rep.Summary)
	}
	for _, line := range []string{"peer host2: 8.0 GiB free, 0 domains running", "db -> host2: migrating (priority 50, 2.0 GiB)",
		"db -> host2: migrated in 0.0 s", "web -> host3: migrated in"} {
		if !strings.Contains(w.out.String(), line) {
			t.Errorf("progress lacks %q:\n%s", line, w.out.String())
		}
	}
	if !w.drainingSeen {
		t.Error("host1 was not marked evacuating during the migrations")
	}
	if mode := w.lvm.Holders("vg0", "db-0"); !cmp.Equal(mode, map[int]lvmlock.Mode{2: lvmlock.ModeEx}) {
		t.Errorf("db's LV after its migration: %v", mode)
	}
}

// TestRunFailedMigrationLeave: a domain whose migration fails stays on
// host1 with its LVs sh until the lock helper converts them back; with the
// leave fallback it is left running only once every LV is ex here again.
func TestRunFailedMigrationLeave(t *testing.T) {
	w := newWorld(t)
	d := w.run("app", 1, `fallback="leave"`, 2)
	w.lv.Do(func() { d.MigrateErr = errors.New("operation failed: migration out job: unexpectedly failed") })
	// The handover left both LVs sh; the lock helper converts one per pause.
	w.hold(1, "app-0", lvmlock.ModeSh)
	w.hold(1, "app-1", lvmlock.ModeSh)
	pauses := 0
	w.onSleep = func() {
		pauses++
		switch pauses {
		case 2:
			w.hold(1, "app-0", lvmlock.ModeEx)
		case 4:
			w.hold(1, "app-1", lvmlock.ModeEx)
		}
	}
	rep := w.evacuate(Options{})
	if diff := cmp.Diff([]string{"app migrate host2 [migrate,leave] left"}, results(rep)); diff != "" {
		t.Errorf("results (-want +got):\n%s", diff)
	}
	if pauses != 4 {
		t.Errorf("%d pauses, want the wait to end when the second LV is ex (4)", pauses)
	}
	if rep.OK() || rep.Domains[0].Error != "migrate to qemu+tls://host2/system: operation failed: migration out job: unexpectedly failed" {
		t.Errorf("report: ok %v, error %q", rep.OK(), rep.Domains[0].Error)
	}
}

// TestRunLeaveNeverWithShared: leave with an LV still sh after
// exclusive_timeout (the lock helper never converted it) is a shutdown,
// then a destroy after shutdown_timeout: never left with a shared lock.
func TestRunLeaveNeverWithShared(t *testing.T) {
	w := newWorld(t)
	d := w.run("app", 1, `fallback="leave"`, 2)
	w.lv.Do(func() { d.MigrateErr = errors.New("migration failed"); d.IgnoresShutdown = true })
	w.hold(1, "app-1", lvmlock.ModeSh)
	rep := w.evacuate(Options{})
	if diff := cmp.Diff([]string{"app migrate host2 [migrate,leave,shutdown,destroy] destroyed"}, results(rep)); diff != "" {
		t.Errorf("results (-want +got):\n%s", diff)
	}
	cfg := w.e.Config
	if want := cfg.Daemon.ExclusiveTimeout.D() + cfg.Evacuate.ShutdownTimeout.D(); w.slept != want {
		t.Errorf("waited %s, want exclusive_timeout then shutdown_timeout (%s)", w.slept, want)
	}
	if !strings.Contains(w.out.String(), "app: not left running: vg0/app-1 is sh here after 2m0s (daemon.exclusive_timeout, or the evacuation's timeout); shutting it down (never left with a shared lock)") {
		t.Errorf("progress:\n%s", w.out.String())
	}
}

// TestRunFallbacks: domains no peer can take get their fallback after the
// migrations, lowest priority first: a managed save, a shutdown, a shutdown
// the guest ignores (destroyed after shutdown_timeout), and leave with every
// LV ex (nothing done).
func TestRunFallbacks(t *testing.T) {
	w := newWorld(t)
	w.unreach["host2"] = errors.New("dial tcp 10.0.0.2:16520: connect: connection refused")
	w.capacity["host3"] = answer("host3", 2)
	w.run("small", 1, `priority="-10"`, 1)
	w.run("saved", 4, `priority="5" fallback="managedsave"`, 1)
	deaf := w.run("deaf", 4, "", 1)
	w.lv.Do(func() { deaf.IgnoresShutdown = true })
	w.run("stays", 8, `priority="-5" fallback="leave"`, 1)
	w.run("polite", 4, `priority="-5"`, 1)
	rep := w.evacuate(Options{})
	want := []string{
		"saved managedsave  [managedsave] saved",
		"deaf shutdown  [shutdown,destroy] destroyed",
		"polite shutdown  [shutdown] shut-down",
		"stays leave  [leave] left",
		"small migrate host3 [migrate] migrated",
	}
	if diff := cmp.Diff(want, results(rep)); diff != "" {
		t.Errorf("results (-want +got):\n%s", diff)
	}
	wantActions := []string{
		"migrate small qemu+tls://host3/system tcp://10.0.0.3",
		"shutdown polite", // -5, then stays (leave: nothing to do), by name backwards
		"shutdown deaf", "destroy deaf",
		"managedsave saved",
	}
	if diff := cmp.Diff(wantActions, w.lv.Actions()); diff != "" {
		t.Errorf("libvirt calls (-want +got):\n%s", diff)
	}
	if w.slept != w.e.Config.Evacuate.ShutdownTimeout.D() {
		t.Errorf("waited %s, want deaf's shutdown_timeout", w.slept)
	}
	for _, line := range []string{
		"peer host2: unreachable (dial tcp 10.0.0.2:16520: connect: connection refused): it takes no domain",
		"deaf: shutdown, not migrated: no peer can take it (it needs 4.2 GiB with the 256 MiB margin): host2 unreachable (dial tcp 10.0.0.2:16520: connect: connection refused), host3 2.0 GiB free",
		"deaf: still running after 2m0s (evacuate.shutdown_timeout): destroying it",
		"saved: saved in 0.0 s (start it on this host only: see lvhook(8))",
	} {
		if !strings.Contains(w.out.String(), line) {
			t.Errorf("progress lacks %q:\n%s", line, w.out.String())
		}
	}
	if rep.OK() || rep.Summary != (Summary{Domains: 5, Migrated: 1, NotMigrated: 4}) {
		t.Errorf("summary %+v", rep.Summary)
	}
}

// TestRunParallel: at most parallel migrations at once.
func TestRunParallel(t *testing.T) {
	for _, parallel := range []int{1, 2} {
		w := newWorld(t)
		release := make(chan struct{})
		for _, name := range []string{"a", "b", "c", "d"} {
			d := w.run(name, 1, "", 1)
			w.lv.Do(func() { d.MigrateHold = release })
		}
		go func() {
			deadline := time.Now().Add(5 * time.Second)
			for time.Now().Before(deadline) && !slices.ContainsFunc(w.lv.Actions(), func(a string) bool {
				return strings.HasPrefix(a, "migrate "+string(rune('a'+parallel-1)))
			}) {
				time.Sleep(5 * time.Millisecond)
			}
			time.Sleep(50 * time.Millisecond) // the others, had they started
			close(release)
		}()
		rep := w.evacuate(Options{Parallel: parallel})
		if got := w.lv.MaxMigrating(); got != parallel {
			t.Errorf("parallel %d: %d migrations at once", parallel, got)
		}
		if rep.Summary.Migrated != 4 {
			t.Errorf("parallel %d: %+v", parallel, rep.Summary)
		}
	}
}

// TestRunTimeout: the migrations end when only shutdown_timeout and the
// destroy's reserve are left of evacuate.timeout: the one under way is
// aborted, the next never starts, and both get their fallback in time.
func TestRunTimeout(t *testing.T) {
	w := newWorld(t)
	w.e.Sleep = nil // real waits: the run's timeout is real time
	w.e.Now = nil
	w.e.Poll = 10 * time.Millisecond
	w.e.Reserve = 100 * time.Millisecond
	w.e.AbortBound = 50 * time.Millisecond
	w.e.Config.Evacuate.Timeout = config.Duration(time.Second)
	w.e.Config.Evacuate.ShutdownTimeout = config.Duration(200 * time.Millisecond)
	hold := make(chan struct{})
	defer close(hold)
	for _, name := range []string{"first", "second"} {
		d := w.run(name, 1, "", 1)
		w.lv.Do(func() { d.MigrateHold = hold })
	}
	start := time.Now()
	rep := w.evacuate(Options{})
	if took := time.Since(start); took > 2*time.Second || took < 650*time.Millisecond {
		t.Errorf("the run took %s, want its 1 s timeout", took)
	}
	want := []string{"first migrate host2 [migrate,shutdown] shut-down", "second migrate host3 [shutdown] shut-down"}
	if diff := cmp.Diff(want, results(rep)); diff != "" {
		t.Errorf("results (-want +got):\n%s", diff)
	}
	wantActions := []string{"migrate first qemu+tls://host2/system", "abort first", "shutdown second", "shutdown first"}
	if diff := cmp.Diff(wantActions, w.lv.Actions()); diff != "" {
		t.Errorf("libvirt calls (-want +got):\n%s", diff)
	}
	if !strings.Contains(rep.Domains[0].Error, "job aborted (context deadline exceeded); the evacuation's time for migrations ran out") ||
		!strings.Contains(rep.Domains[1].Reason, "no time was left for migrations") {
		t.Errorf("report: %+v", rep.Domains)
	}
}

// TestRunGoneAfterFailure: a migration that fails but leaves the domain
// stopped here (say, its Confirm failed) gets no fallback.
func TestRunGoneAfterFailure(t *testing.T) {
	w := newWorld(t)
	d := w.run("odd", 1, "", 1)
	w.lv.Do(func() { d.MigrateErr = errors.New("confirm failed") })
	w.e.Libvirt = stopsOnMigrate{w.lv}
	rep := w.evacuate(Options{})
	if diff := cmp.Diff([]string{"odd migrate host2 [migrate] gone"}, results(rep)); diff != "" {
		t.Errorf("results (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"migrate odd qemu+tls://host2/system"}, w.lv.Actions()); diff != "" {
		t.Errorf("libvirt calls (-want +got):\n%s", diff)
	}
}

// stopsOnMigrate is a libvirtd whose failed migrations stop the domain.
type stopsOnMigrate struct{ *virttest.Fake }

func (s stopsOnMigrate) Migrate(ctx context.Context, uuid string, m virt.Migration) error {
	err := s.Fake.Migrate(ctx, uuid, m)
	d := s.Domain(uuid)
	s.Do(func() { d.State = virt.StateShutoff })
	return err
}

// TestRunStopped: an evacuation whose caller stops it (SIGTERM) aborts the
// migration under way, starts no fallback, and says so.
func TestRunStopped(t *testing.T) {
	w := newWorld(t)
	hold := make(chan struct{})
	defer close(hold)
	d := w.run("web", 1, "", 1)
	w.lv.Do(func() { d.MigrateHold = hold })
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for len(w.lv.Actions()) == 0 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	rep, err := w.e.Run(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"web migrate host2 [migrate] not-done"}, results(rep)); diff != "" {
		t.Errorf("results (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"migrate web qemu+tls://host2/system", "abort web"}, w.lv.Actions()); diff != "" {
		t.Errorf("libvirt calls (-want +got):\n%s", diff)
	}
	want := "migrate to qemu+tls://host2/system: job aborted (context canceled); shutdown not done: the evacuation's time ran out (evacuate.timeout), or it was stopped"
	if rep.Domains[0].Error != want {
		t.Errorf("error %q, want %q", rep.Domains[0].Error, want)
	}
}

// TestRunStopFailures: a crashed guest, which cannot shut down, is
// destroyed at once; a shutdown libvirt refuses is asked again until
// shutdown_timeout, then the domain is destroyed; a managed save that
// fails falls back to leave's rule; a destroy that fails is reported, the
// domain still running.
func TestRunStopFailures(t *testing.T) {
	w := newWorld(t)
	for name := range map[string]bool{"host2": true, "host3": true} {
		w.unreach[name] = errors.New("connection refused")
	}
	crashed := w.run("crashed", 1, `priority="4"`, 1)
	refusing := w.run("refusing", 1, `priority="3"`, 1)
	unsaved := w.run("unsaved", 1, `priority="2" fallback="managedsave"`, 1)
	stuck := w.run("stuck", 1, `priority="1"`, 1)
	w.lv.Do(func() {
		crashed.State = virt.StateCrashed
		crashed.ShutdownErr = errors.New("Requested operation is not valid: domain is not running")
		refusing.ShutdownErr = errors.New("Timed out during operation: cannot acquire state change lock")
		unsaved.StopErr = errors.New("operation failed: no space left on device")
		stuck.StopErr = errors.New("Failed to terminate process 4242 with SIGKILL: Device or resource busy")
	})
	rep := w.evacuate(Options{})
	want := []string{
		"crashed shutdown  [shutdown,destroy] destroyed",
		"refusing shutdown  [shutdown,destroy] destroyed",
		"unsaved managedsave  [managedsave,leave] left",
		"stuck shutdown  [shutdown,destroy] failed",
	}
	if diff := cmp.Diff(want, results(rep)); diff != "" {
		t.Errorf("results (-want +got):\n%s", diff)
	}
	// The crashed guest's destroy waits nothing; the two refusals wait
	// shutdown_timeout each.
	if want := 2 * w.e.Config.Evacuate.ShutdownTimeout.D(); w.slept != want {
		t.Errorf("waited %s, want %s", w.slept, want)
	}
	shutdowns := 0
	for _, a := range w.lv.Actions() {
		if a == "shutdown refusing" {
			shutdowns++
		}
	}
	if shutdowns != 61 {
		t.Errorf("refusing was asked to shut down %d times, want once, then again after each of the 60 pauses", shutdowns)
	}
	for i, wantErr := range map[int]string{
		0: "",
		2: "managed save: operation failed: no space left on device",
		3: "shutdown: Failed to terminate process 4242 with SIGKILL: Device or resource busy; destroy: Failed to terminate process 4242 with SIGKILL: Device or resource busy",
	} {
		if got := rep.Domains[i].Error; got != wantErr {
			t.Errorf("%s's error %q, want %q", rep.Domains[i].Name, got, wantErr)
		}
	}
}
