package killvg

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/lvhook/lvhook/internal/testutil"
	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/lvmlock/lvmfake"
	"github.com/lvhook/lvhook/state"
)

var vg0Devices = []string{"vg0-pool", "vg0-pool-tpool", "vg0-vm1--data", "vg0-vm1--root", "vg0-vm2--root"}

// The run lvmlockctl makes: every device of vg0 but its lvmlock LV gets the
// error table, the LVs' own before the layer; the domains using vg0 are
// destroyed, the one on vg1 lives on; nothing of vg1 and no lvm command is
// touched; the record says so.
func TestKill(t *testing.T) {
	w := newWorld(t)
	rec, err := w.killer().Kill(context.Background(), "vg0", false)
	if err != nil {
		t.Fatal(err)
	}
	if !rec.Verified || len(rec.Left) != 0 || rec.Runs != 1 || rec.Finished.IsZero() {
		t.Errorf("record %+v: want verified, nothing left, one finished run", rec)
	}
	if diff := cmp.Diff(vg0Devices, rec.Wiped); diff != "" {
		t.Errorf("wiped (-want +got):\n%s", diff)
	}
	wipes := w.calls("dmsetup wipe_table")
	if len(wipes) != 5 || wipes[4] != "dmsetup wipe_table -- vg0-pool-tpool" {
		t.Errorf("wipes %q: want the LVs' own devices, then the tpool layer last", wipes)
	}
	for _, c := range w.lvm.Calls(1) {
		if strings.Contains(c, "lvmlock") || strings.Contains(c, "vg1") || strings.HasPrefix(c, "lv") {
			t.Errorf("ran %q: the lvmlock LV, vg1 and lvm are not kill-vg's", c)
		}
	}
	for _, lv := range []string{"vm1-root", "vm1-data", "vm2-root", "pool"} {
		if w.lvm.Writable(1, "vg0", lv) {
			t.Errorf("vg0/%s still writable", lv)
		}
	}
	if !w.lvm.Writable(1, "vg1", "vm3-root") {
		t.Error("vg1/vm3-root was cut")
	}
	if diff := cmp.Diff([]string{"vm3"}, w.running()); diff != "" {
		t.Errorf("running (-want +got):\n%s", diff)
	}
	want := []state.KilledDomain{{Name: "vm1", UUID: uuid1, Destroyed: true}, {Name: "vm2", UUID: uuid2, Destroyed: true}}
	if diff := cmp.Diff(want, rec.Domains, cmpopts.SortSlices(func(a, b state.KilledDomain) bool { return a.Name < b.Name })); diff != "" {
		t.Errorf("domains (-want +got):\n%s", diff)
	}
	saved, ok, err := w.state.LoadKilled("vg0")
	if err != nil || !ok {
		t.Fatalf("no record written: %v", err)
	}
	if diff := cmp.Diff(rec, saved); diff != "" {
		t.Errorf("saved record differs from the returned one (-returned +saved):\n%s", diff)
	}
}

// sanlock starts the kill path about every second: a run after a verified
// one checks the tables again, wipes nothing, destroys nothing.
func TestKillRepeat(t *testing.T) {
	w := newWorld(t)
	k := w.killer()
	if _, err := k.Kill(context.Background(), "vg0", false); err != nil {
		t.Fatal(err)
	}
	w.lvm.ResetCalls()
	w.lib.ResetCalls()
	rec, err := k.Kill(context.Background(), "vg0", false)
	if err != nil || !rec.Verified || rec.Runs != 2 {
		t.Fatalf("second run: %+v, %v; want verified, run 2", rec, err)
	}
	if wipes := w.calls("dmsetup wipe_table"); len(wipes) != 0 {
		t.Errorf("second run wiped again: %q", wipes)
	}
	if got := w.calls("dmsetup"); !slices.Equal(got, []string{
		"dmsetup info -c --noheadings --separator | -o name,uuid,open,vg_name,lv_name,lv_layer", "dmsetup table"}) {
		t.Errorf("second run ran %q, want one listing and one table", got)
	}
	if n := w.lib.Calls(); n != 0 {
		t.Errorf("second run made %d libvirt calls", n)
	}
}

// Two runs at once: the second waits for the first, then verifies itself;
// it never reports success before the first has finished.
func TestKillConcurrent(t *testing.T) {
	w := newWorld(t)
	block := blockOn(w.lvm.Host(1), "dmsetup wipe_table -- vg0-vm2--root")
	w.runner = block
	first, second := w.killer(), w.killer()
	type result struct {
		rec state.Killed
		err error
		at  time.Time
	}
	firstDone, secondDone := make(chan result, 1), make(chan result, 1)
	go func() {
		rec, err := first.Kill(context.Background(), "vg0", false)
		firstDone <- result{rec, err, time.Now()}
	}()
	<-block.entered // the first run is wiping
	go func() {
		rec, err := second.Kill(context.Background(), "vg0", false)
		secondDone <- result{rec, err, time.Now()}
	}()
	select {
	case r := <-secondDone:
		t.Fatalf("the second run returned (%+v, %v) while the first was still wiping", r.rec, r.err)
	case <-time.After(300 * time.Millisecond):
	}
	block.free()
	a := testutil.Within(t, 10*time.Second, "first run", func() result { return <-firstDone })
	b := testutil.Within(t, 10*time.Second, "second run", func() result { return <-secondDone })
	if a.err != nil || b.err != nil || !a.rec.Verified || !b.rec.Verified {
		t.Fatalf("first %+v %v, second %+v %v: want both verified", a.rec, a.err, b.rec, b.err)
	}
	if b.at.Before(a.at) || b.rec.Runs != 2 {
		t.Errorf("second run: done before the first (%v) or not counted (%d runs)", b.at.Before(a.at), b.rec.Runs)
	}
	if n := len(w.calls("dmsetup wipe_table")); n != 5 {
		t.Errorf("%d wipes: each device is wiped once", n)
	}
}

// Storage that hangs: a wipe blocked in the kernel cannot be killed. The
// run gives up inside its bound, unverified (lvmlockctl then drops
// nothing and the watchdog resets the host), having wiped the rest and
// destroyed the domains.
func TestKillHungWipe(t *testing.T) {
	w := newWorld(t)
	block := blockOn(w.lvm.Host(1), "dmsetup wipe_table -- vg0-vm1--data")
	defer block.free()
	w.runner = block
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	rec, err := w.killer().Kill(ctx, "vg0", false)
	if took := time.Since(start); took > 1200*time.Millisecond {
		t.Errorf("run took %s, bound 1s", took)
	}
	if err != nil || rec.Verified {
		t.Fatalf("Kill = %+v, %v; want an unverified record", rec, err)
	}
	// The layer waits for the LVs' own devices: it may be left too.
	if i := slices.IndexFunc(rec.Left, func(d state.KilledDevice) bool { return d.Name == "vg0-vm1--data" }); i < 0 || !strings.Contains(rec.Left[i].Why, "gave up waiting") {
		t.Errorf("left %+v: want vg0-vm1--data, given up", rec.Left)
	}
	if w.lvm.Writable(1, "vg0", "vm2-root") || !w.lvm.Writable(1, "vg0", "vm1-data") {
		t.Error("the other devices must be wiped, the hung one not")
	}
	if diff := cmp.Diff([]string{"vm3"}, w.running()); diff != "" {
		t.Errorf("running (-want +got):\n%s", diff)
	}
}

// A wipe dmsetup refuses: unverified, the device named with dmsetup's reason.
func TestKillWipeFails(t *testing.T) {
	w := newWorld(t)
	w.lvm.Intercept = func(_ int, args []string) (string, string, error, bool) {
		if strings.Join(args, " ") == "dmsetup wipe_table -- vg0-vm1--root" {
			return "", "device-mapper: reload ioctl on vg0-vm1--root  failed: Invalid argument\nCommand failed.\n", lvmfake.ExitError{Code: 1}, true
		}
		return "", "", nil, false
	}
	rec, err := w.killer().Kill(context.Background(), "vg0", false)
	if err != nil || rec.Verified {
		t.Fatalf("Kill = %+v, %v; want unverified", rec, err)
	}
	want := []state.KilledDevice{{Name: "vg0-vm1--root", Why: "device-mapper: reload ioctl on vg0-vm1--root  failed: Invalid argument"}}
	if diff := cmp.Diff(want, rec.Left); diff != "" {
		t.Errorf("left (-want +got):\n%s", diff)
	}
	// The next run of sanlock's kill path tries again, and succeeds.
	w.lvm.Intercept = nil
	rec, err = w.killer().Kill(context.Background(), "vg0", false)
	if err != nil || !rec.Verified || rec.Runs != 2 || len(rec.Left) != 0 {
		t.Errorf("second run: %+v, %v; want verified", rec, err)
	}
}

// The guard: lvmlockctl started it, or lvmlockd is killing the VG, or
// --force; else nothing but the one read of lvmlockd.
func TestKillGuard(t *testing.T) {
	for _, tc := range []struct {
		name   string
		parent string
		killed bool
		down   bool // lvmlockd not running
		force  bool
		ok     bool
	}{
		{"started by lvmlockctl", "lvmlockctl", false, false, false, true},
		{"kill_vg set", "bash", true, false, false, true},
		{"forced", "bash", false, false, true, true},
		{"forced, lvmlockd down", "bash", false, true, true, true},
		{"not killed", "bash", false, false, false, false},
		{"lvmlockd down", "sshd", false, true, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			w.parent = tc.parent
			w.lvm.Do(func(c *lvmfake.Cluster) {
				c.Killed[1]["vg0"] = tc.killed
				c.Lvmlockd[1] = !tc.down
			})
			w.lvm.ResetCalls()
			rec, err := w.killer().Kill(context.Background(), "vg0", tc.force)
			if !tc.ok {
				if !errors.Is(err, ErrNotKilled) || strings.Contains(err.Error(), "\n") {
					t.Errorf("Kill = %v, want one line wrapping ErrNotKilled", err)
				}
				if calls := w.lvm.Calls(1); len(calls) > 1 || len(calls) == 1 && calls[0] != "lvmlockctl --info --dump" {
					t.Errorf("refused run ran %q", calls)
				}
				if _, found, _ := w.state.LoadKilled("vg0"); found {
					t.Error("refused run wrote a record")
				}
				return
			}
			if err != nil || !rec.Verified {
				t.Errorf("Kill = %+v, %v; want verified", rec, err)
			}
		})
	}
}

// A name lvm would not take never reaches a command, as an option least.
func TestKillRefusesBadNames(t *testing.T) {
	w := newWorld(t)
	w.lvm.ResetCalls()
	for _, vg := range []string{"-ffoo", "vg0 --x", "--config=x", "", "vg0/a", ".."} {
		if _, err := w.killer().Kill(context.Background(), vg, true); !lvmlock.IsInvalidName(err) {
			t.Errorf("Kill(%q) = %v, want a *NameError", vg, err)
		}
		if _, err := w.killer().Recover(context.Background(), vg); !lvmlock.IsInvalidName(err) {
			t.Errorf("Recover(%q) = %v, want a *NameError", vg, err)
		}
	}
	if calls := w.lvm.Calls(1); len(calls) != 0 {
		t.Errorf("ran %q", calls)
	}
}

// Destroys are best effort: a domain libvirt cannot destroy (QEMU stuck in
// the kernel) keeps running on error tables, and the run still succeeds.
func TestKillDestroyFails(t *testing.T) {
	w := newWorld(t)
	vm2 := w.lib.Domain(uuid2)
	w.lib.Do(func() {
		vm2.StopErr = errors.New("Failed to terminate process 4242 with SIGKILL: Device or resource busy")
	})
	rec, err := w.killer().Kill(context.Background(), "vg0", false)
	if err != nil || !rec.Verified {
		t.Fatalf("Kill = %+v, %v; want verified", rec, err)
	}
	i := slices.IndexFunc(rec.Domains, func(d state.KilledDomain) bool { return d.Name == "vm2" })
	if i < 0 || rec.Domains[i].Destroyed || !strings.Contains(rec.Domains[i].Error, "SIGKILL") {
		t.Errorf("domains %+v: want vm2 not destroyed, with libvirt's reason", rec.Domains)
	}
	// The next run retries that destroy only.
	w.lib.Do(func() { vm2.StopErr = nil })
	rec, err = w.killer().Kill(context.Background(), "vg0", false)
	if err != nil || !rec.Verified || !slices.ContainsFunc(rec.Domains, func(d state.KilledDomain) bool { return d.Name == "vm2" && d.Destroyed }) {
		t.Errorf("second run: %+v, %v; want vm2 destroyed", rec, err)
	}
	if diff := cmp.Diff([]string{"vm3"}, w.running()); diff != "" {
		t.Errorf("running (-want +got):\n%s", diff)
	}
}

// Without libvirt the VG is killed all the same; the recorded domains are
// listed as not destroyed, with why.
func TestKillWithoutLibvirt(t *testing.T) {
	w := newWorld(t)
	k := w.killer()
	k.Connect = func(context.Context) (Libvirt, error) {
		return nil, errors.New("dial unix /var/run/libvirt/libvirt-sock: connect: no such file or directory")
	}
	rec, err := k.Kill(context.Background(), "vg0", false)
	if err != nil || !rec.Verified {
		t.Fatalf("Kill = %+v, %v; want verified", rec, err)
	}
	if len(rec.Domains) != 1 || rec.Domains[0].Name != "vm1" || rec.Domains[0].Destroyed || !strings.HasPrefix(rec.Domains[0].Error, "libvirt: dial unix") {
		t.Errorf("domains %+v: want vm1 (recorded) not destroyed, libvirt's error", rec.Domains)
	}
}

// A domain whose XML libvirt does not give is destroyed when lvhook's
// record gives it the VG; one whose XML lvhook cannot parse when a source
// path in it names the VG.
func TestKillDomainsWithoutXML(t *testing.T) {
	w := newWorld(t)
	vm1, vm2 := w.lib.Domain(uuid1), w.lib.Domain(uuid2)
	w.lib.Do(func() {
		vm1.XML = "" // libvirt answers nothing usable
		vm2.XML = strings.Replace(vm2.XML, "<devices>", "<devices><disk type='volume'><source pool='gone' volume='x'/><target dev='vdz'/></disk>", 1)
	})
	rec, err := w.killer().Kill(context.Background(), "vg0", false)
	if err != nil || !rec.Verified {
		t.Fatalf("Kill = %+v, %v", rec, err)
	}
	if diff := cmp.Diff([]string{"vm3"}, w.running()); diff != "" {
		t.Errorf("running (-want +got):\n%s", diff)
	}
}

// A host that holds nothing of the VG: nothing to wipe, verified at once.
func TestKillNothingActive(t *testing.T) {
	w := newWorld(t)
	w.lvm.Do(func(c *lvmfake.Cluster) {
		for _, lv := range c.VGs["vg0"].LVs {
			delete(lv.Holders, 1)
		}
	})
	rec, err := w.killer().Kill(context.Background(), "vg0", false)
	if err != nil || !rec.Verified || len(rec.Wiped) != 0 {
		t.Errorf("Kill = %+v, %v; want verified, nothing wiped", rec, err)
	}
}

// The wipe passes: an LV's own device, then its layers, then the hidden
// sub-LVs under a pool, cache or raid LV (their flushing suspends must not
// race the wipe of what is under them); a device without a live table is
// not taken for unwritable.
func TestWipeOrder(t *testing.T) {
	dev := func(lv, layer string, table ...string) device {
		d := device{DMDevice: lvmlock.DMDevice{LV: lv, Layer: layer}, table: []lvmlock.DMTarget{}}
		for _, ty := range table {
			d.table = append(d.table, lvmlock.DMTarget{Type: ty})
		}
		return d
	}
	tests := []struct {
		d          device
		pass       int
		unwritable bool
	}{
		{dev("vm1-root", "", "linear"), 0, false},
		{dev("thin1", "", "thin"), 0, false},
		{dev("pool", "", "linear"), 0, false},
		{dev("pool", "tpool", "thin-pool"), 1, false},
		{dev("origin", "real", "linear"), 1, false},
		{dev("pool_tdata", "", "linear"), 2, false},
		{dev("pool_tmeta", "", "linear"), 2, false},
		{dev("cached_corig", "", "linear"), 2, false},
		{dev("r1_rimage_0", "", "linear"), 2, false},
		{dev("vm1-root", "", "error"), 0, true},
		{dev("vm1-root", ""), 0, false}, // no live table
		{dev("vm1-root", "", "error", "linear"), 0, false},
	}
	for _, tt := range tests {
		if got := wipePass(tt.d); got != tt.pass {
			t.Errorf("wipePass(%s-%s) = %d, want %d", tt.d.LV, tt.d.Layer, got, tt.pass)
		}
		if got := unwritable(tt.d); got != tt.unwritable {
			t.Errorf("unwritable(%s-%s %v) = %v, want %v", tt.d.LV, tt.d.Layer, tt.d.table, got, tt.unwritable)
		}
	}
}

// A device of the VG with no live table (an activation between its load and
// its resume): removed, not counted as unwritable; while it stays, the kill
// is not verified.
func TestKillDeviceWithoutLiveTable(t *testing.T) {
	w := newWorld(t)
	w.lvm.Intercept = func(_ int, args []string) (string, string, error, bool) {
		switch strings.Join(args, " ") {
		case "dmsetup table":
			return "vg0-lvmlock: 0 524288 linear 254:16 2048\nvg0-vm1--root: \n", "", nil, true
		case "dmsetup remove -- vg0-vm1--root":
			return "", "device-mapper: remove ioctl on vg0-vm1--root  failed: Device or resource busy\nCommand failed.\n", lvmfake.ExitError{Code: 1}, true
		}
		return "", "", nil, false
	}
	rec, err := w.killer().Kill(context.Background(), "vg0", false)
	if err != nil || rec.Verified {
		t.Fatalf("Kill = %+v, %v; want unverified", rec, err)
	}
	if i := slices.IndexFunc(rec.Left, func(d state.KilledDevice) bool { return d.Name == "vg0-vm1--root" }); i < 0 ||
		!strings.Contains(rec.Left[i].Why, "Device or resource busy") {
		t.Errorf("left %+v: want vg0-vm1--root, its removal refused", rec.Left)
	}
	if !slices.Contains(w.lvm.Calls(1), "dmsetup remove -- vg0-vm1--root") {
		t.Errorf("calls %v: no removal of the device without a live table", w.lvm.Calls(1))
	}
}
