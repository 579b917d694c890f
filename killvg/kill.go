package killvg

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/lvhook/lvhook/config"
	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/state"
	"github.com/lvhook/lvhook/virt"
)

// Libvirt is what kill-vg asks of the local libvirtd (virt.Conn).
type Libvirt interface {
	ActiveDomains(ctx context.Context) ([]virt.Domain, error)
	DomainXML(ctx context.Context, uuid string) ([]byte, error)
	Destroy(ctx context.Context, uuid string) error
	Close() error
}

// Killer kills and recovers VGs on this host.
type Killer struct {
	Config config.Config
	LVM    *lvmlock.Client
	State  *state.State
	// Connect opens a connection to the local libvirtd (read-write).
	Connect func(ctx context.Context) (Libvirt, error)
	Log     zerolog.Logger
	// Parent names the process that started this one (/proc/PPID/comm);
	// Now is the clock. Tests replace them.
	Parent func() string
	Now    func() time.Time
	// Sanlock tells Recover whether the lockspace is joined again.
	Sanlock lvmlock.Sanlock
}

// ErrNotKilled is the guard's refusal: lvmlockd is not killing the VG and
// lvmlockctl did not start this command.
var ErrNotKilled = errors.New("refusing to kill")

// parallel bounds the dmsetup and libvirt calls in flight.
const parallel = 8

// destroyBound bounds the destroys of one run: they are best effort, the
// error tables are the guarantee.
const destroyBound = 10 * time.Second

// Kill makes every device of vg unwritable on this host, records it and
// destroys the domains that use vg (package comment). The record it
// returns says whether the devices were verified unwritable (exit 0). An
// error means nothing was done: a name that is no VG's, the guard's refusal
// (ErrNotKilled), or another run of vg that held the VG's flock until the
// deadline. ctx bounds the whole run (kill_vg_timeout).
func (k *Killer) Kill(ctx context.Context, vg string, force bool) (state.Killed, error) {
	if err := lvmlock.ValidVG(vg); err != nil {
		return state.Killed{}, err
	}
	start := k.now()
	log := k.Log.With().Str("vg", vg).Logger()
	if err := k.guard(ctx, vg, force, log); err != nil {
		return state.Killed{}, err
	}
	total := time.Minute
	if dl, ok := ctx.Deadline(); ok {
		total = time.Until(dl)
	}
	// Serialised: sanlock starts a run about every second while one runs.
	// A run that waited re-verifies: it never reports what it did not see.
	lockCtx, cancel := before(ctx, total/8)
	unlock, err := k.State.LockKilled(lockCtx, vg)
	cancel()
	switch {
	case err != nil && lockCtx.Err() != nil:
		return state.Killed{}, fmt.Errorf("another kill-vg of VG %s still ran: %w", vg, err)
	case err != nil:
		log.Error().Err(err).Msg("cannot take kill-vg's lock of the VG: going on without it")
		unlock = func() {}
	}
	defer unlock()

	rec, found, err := k.State.LoadKilled(vg)
	if err != nil {
		log.Warn().Err(err).Msg("kill record unreadable: replaced")
	}
	if !found || err != nil {
		rec = state.Killed{VG: vg, Started: start.UTC()}
	}
	if found && rec.Verified && !rec.Finished.IsZero() {
		if k.reverify(ctx, &rec, total, log) {
			return rec, nil
		}
	}
	rec.Runs++
	rec.Finished = time.Time{}
	log.Warn().Int("run", rec.Runs).Time("first", rec.Started).Msg("lease storage lost: making every LV of the VG unwritable on this host")
	// First of all, before any domain is destroyed: the hooks of those
	// destroys (release end) must find the VG killed and leave lvm alone.
	k.save(rec, log)

	wipeCtx, cancel := before(ctx, total/8)
	wiped, failed := k.wipe(wipeCtx, vg, log)
	cancel()
	for _, name := range wiped {
		if !slices.Contains(rec.Wiped, name) {
			rec.Wiped = append(rec.Wiped, name)
		}
	}
	verifyCtx, cancel := before(ctx, total/25)
	rec.Left, err = k.writable(verifyCtx, vg, failed)
	cancel()
	rec.Verified = err == nil && len(rec.Left) == 0
	if err != nil {
		rec.Left = append(rec.Left, state.KilledDevice{Why: "cannot list the devices: " + lvmlock.Reason(err)})
	}
	k.save(rec, log)
	ev := log.Warn()
	if !rec.Verified {
		ev = log.Error()
	}
	ev.Bool("verified", rec.Verified).Int("wiped", len(wiped)).Int("left", len(rec.Left)).
		Dur("took", k.now().Sub(start)).Msg("VG's devices checked")

	destroyCtx, cancel := before(ctx, total/25)
	destroyCtx, cancel2 := context.WithTimeout(destroyCtx, destroyBound)
	k.destroy(destroyCtx, &rec, log)
	cancel2()
	cancel()
	rec.Finished = k.now().UTC()
	k.save(rec, log)
	ev = log.Warn()
	if !rec.Verified {
		ev = log.Error()
	}
	ev.Bool("verified", rec.Verified).Dur("took", k.now().Sub(start)).Msg("kill-vg done")
	return rec, nil
}

// guard lets a kill proceed only when lvmlockd is killing vg (its kill_vg
// flag), when lvmlockctl started this command, or when forced: the command
// destroys domains and cuts every LV of the VG.
func (k *Killer) guard(ctx context.Context, vg string, force bool, log zerolog.Logger) error {
	if force {
		log.Warn().Msg("kill-vg --force: killing the VG whatever lvmlockd says")
		return nil
	}
	if k.parent() == "lvmlockctl" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	info, err := k.LVM.LockdInfo(ctx)
	if err != nil {
		return fmt.Errorf("%w VG %s: lvmlockd cannot tell whether it is killing it (%s) and lvmlockctl did not start this command; add --force to kill it anyway",
			ErrNotKilled, vg, lvmlock.Reason(err))
	}
	if info[vg].KillVG {
		return nil
	}
	return fmt.Errorf("%w VG %s: lvmlockd is not killing it (no kill_vg in `lvmlockctl --info --dump`) and lvmlockctl did not start this command; add --force to make its LVs unwritable and destroy its domains anyway",
		ErrNotKilled, vg)
}

// reverify checks a record whose last run was verified: still no device
// of the VG can be written. It retries the destroys that failed. False
// means the full procedure must run again.
func (k *Killer) reverify(ctx context.Context, rec *state.Killed, total time.Duration, log zerolog.Logger) bool {
	verifyCtx, cancel := before(ctx, total/25)
	left, err := k.writable(verifyCtx, rec.VG, nil)
	cancel()
	if err != nil || len(left) > 0 {
		log.Error().Err(err).Int("left", len(left)).Msg("VG killed by an earlier run, but a device may be written again: killing it again")
		return false
	}
	if slices.ContainsFunc(rec.Domains, func(d state.KilledDomain) bool { return !d.Destroyed }) {
		destroyCtx, cancel := before(ctx, total/25)
		destroyCtx, cancel2 := context.WithTimeout(destroyCtx, destroyBound)
		k.destroy(destroyCtx, rec, log)
		cancel2()
		cancel()
	}
	rec.Runs++
	rec.Finished = k.now().UTC()
	k.save(*rec, log)
	log.Info().Int("run", rec.Runs).Msg("VG already killed by an earlier run; every device still unwritable")
	return true
}

// device is one device of the VG being killed.
type device struct {
	lvmlock.DMDevice
	table []lvmlock.DMTarget
}

// devicesOf lists vg's devices with their live tables, but its lvmlock LV
// (sanlock's lease device, not a guest's: after the drop nothing writes it,
// and it is needed to join the lockspace again). A device listed but gone
// from the tables was removed meanwhile.
func (k *Killer) devicesOf(ctx context.Context, vg string) ([]device, error) {
	devs, err := k.LVM.DMDevices(ctx)
	if err != nil {
		return nil, err
	}
	tables, err := k.LVM.DMTables(ctx)
	if err != nil {
		return nil, err
	}
	var out []device
	for _, d := range devs {
		t, ok := tables[d.Name]
		if d.LVM() && d.VG == vg && d.LV != "lvmlock" && ok {
			out = append(out, device{DMDevice: d, table: t})
		}
	}
	return out, nil
}

// wipe replaces the table of every device of vg that is not all error yet,
// in three passes, each in parallel, so that a device's flushing suspend
// never races the wipe of a device under it: the LVs' own devices, then
// their layers (-tpool, -real, ...), then the hidden sub-LVs a pool, cache,
// raid or mirror is built on (_tdata, _cdata, _rimage_0, ...). A device
// with no live table is removed instead (a pending table could be resumed
// later; the kernel refuses an open device). It returns the devices it
// wiped or removed and why the others failed.
func (k *Killer) wipe(ctx context.Context, vg string, log zerolog.Logger) (wiped []string, failed map[string]string) {
	failed = map[string]string{}
	devs, err := k.devicesOf(ctx, vg)
	if err != nil {
		log.Error().Err(err).Msg("cannot list the VG's devices")
		return nil, failed
	}
	var mu sync.Mutex
	for pass := range 3 {
		var todo []device
		for _, d := range devs {
			if wipePass(d) == pass && !unwritable(d) {
				todo = append(todo, d)
			}
		}
		each(todo, func(d device) {
			start := time.Now()
			what, do := "table replaced by the error target", k.LVM.WipeTable
			if len(d.table) == 0 {
				what, do = "device without a live table removed", k.LVM.RemoveDM
			}
			err := do(ctx, d.Name)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed[d.Name] = lvmlock.Reason(err)
				log.Error().Err(err).Str("dev", d.Name).Int("open", d.Open).Dur("took", time.Since(start)).Msg("wipe failed")
				return
			}
			wiped = append(wiped, d.Name)
			log.Info().Str("dev", d.Name).Str("lv", d.LV).Str("layer", d.Layer).Int("open", d.Open).
				Dur("took", time.Since(start)).Msg(what)
		})
	}
	slices.Sort(wiped)
	return wiped, failed
}

// subLVSuffixes are lvm's reserved name parts of the hidden LVs a pool,
// cache, raid, mirror or VDO LV is built on (lvm(8), VALID NAMES).
var subLVSuffixes = []string{"_cdata", "_cmeta", "_corig", "_cpool", "_cvol", "_mimage", "_mlog",
	"_pmspare", "_rimage", "_rmeta", "_tdata", "_tmeta", "_vdata", "_vorigin", "_wcorig"}

// wipePass is the pass that wipes d: 0 an LV's own device, 1 a layer, 2 a
// hidden sub-LV.
func wipePass(d device) int {
	switch {
	case slices.ContainsFunc(subLVSuffixes, func(s string) bool { return strings.Contains(d.LV, s) }):
		return 2
	case d.Layer != "":
		return 1
	}
	return 0
}

// unwritable tells whether nothing can write d: a live table of error
// targets only. A device without a live table is not (a loaded inactive
// table would make it writable once resumed).
func unwritable(d device) bool { return len(d.table) > 0 && lvmlock.ErrorOnly(d.table) }

// writable lists the devices of vg that can still be written: any target
// but error. failed gives why a wipe failed.
func (k *Killer) writable(ctx context.Context, vg string, failed map[string]string) ([]state.KilledDevice, error) {
	devs, err := k.devicesOf(ctx, vg)
	if err != nil {
		return nil, err
	}
	var left []state.KilledDevice
	for _, d := range devs {
		if unwritable(d) {
			continue
		}
		why := failed[d.Name]
		if why == "" {
			why = "its table is " + targetTypes(d.table)
			if len(d.table) == 0 {
				why = "it has no live table (one loaded could be resumed)"
			}
		}
		left = append(left, state.KilledDevice{Name: d.Name, Why: why})
	}
	return left, nil
}

func targetTypes(t []lvmlock.DMTarget) string {
	var types []string
	for _, x := range t {
		if !slices.Contains(types, x.Type) {
			types = append(types, x.Type)
		}
	}
	return strings.Join(types, ", ")
}

// save writes the record; a failure is logged, not fatal: the wipe matters
// more than its record.
func (k *Killer) save(rec state.Killed, log zerolog.Logger) {
	if err := k.State.SaveKilled(rec); err != nil {
		log.Error().Err(err).Msg("cannot write the kill record: hooks will not know the VG is killed")
	}
}

// each runs f on every item, parallel at a time, and waits for all.
func each[T any](items []T, f func(T)) {
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for _, it := range items {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			f(it)
		}()
	}
	wg.Wait()
}

// before returns a ctx that ends reserve before ctx's deadline (ctx's own
// end when it has none).
func before(ctx context.Context, reserve time.Duration) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok {
		return context.WithDeadline(ctx, dl.Add(-reserve))
	}
	return context.WithCancel(ctx)
}

func (k *Killer) now() time.Time {
	if k.Now != nil {
		return k.Now()
	}
	return time.Now()
}

func (k *Killer) parent() string {
	if k.Parent != nil {
		return k.Parent()
	}
	return ParentName()
}

// ParentName is the command name of this process's parent, from
// /proc/PPID/comm ("" when unreadable).
func ParentName() string {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(os.Getppid()) + "/comm")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(data))
}
