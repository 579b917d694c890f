package lvmlock_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"

	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/lvmlock/lvmfake"
)

const vg0 = "LVM-Kq9gvhNxscgcDc7QhPeQm3KtvPxbPc75"

func TestParseDMInfo(t *testing.T) {
	out, err := os.ReadFile("../testdata/lvm/dmsetup-info.txt")
	if err != nil {
		t.Fatal(err)
	}
	got, err := lvmlock.ParseDMInfo(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []lvmlock.DMDevice{
		{Name: "luks-3f1c0b4e-7b61-4c0a-9d7e-1e2a3b4c5d6e", UUID: "CRYPT-LUKS2-3f1c0b4e7b614c0a9d7e1e2a3b4c5d6e-luks-3f1c0b4e-7b61-4c0a-9d7e-1e2a3b4c5d6e", Open: 1},
		{Name: "vg0-lv--new", UUID: vg0 + "Zt8WqL3rYp2mVn6KcJx4Hd9sBf1gTe0a", VG: "vg0", LV: "lv-new"},
		{Name: "vg0-lvmlock", UUID: vg0 + "e3ZcEbF5yD8wNq2LhR7uTs4kPj6mVa1x", Open: 1, VG: "vg0", LV: "lvmlock"},
		{Name: "vg0-pool", UUID: vg0 + "Xw2Hn8Ta4Lk6Vq0Rb3Jy7Mf5Gd1Pc9Es", VG: "vg0", LV: "pool"},
		{Name: "vg0-pool-tpool", UUID: vg0 + "Xw2Hn8Ta4Lk6Vq0Rb3Jy7Mf5Gd1Pc9Es-tpool", Open: 2, VG: "vg0", LV: "pool", Layer: "tpool"},
		{Name: "vg0-pool_tdata", UUID: vg0 + "Fh4Ks1Qz7Wm3Rt9Yb6Nv2Cx8Lp5Dj0Ug", Open: 1, VG: "vg0", LV: "pool_tdata"},
		{Name: "vg0-pool_tmeta", UUID: vg0 + "Ab7Qm2Xc9Rv4Ln1Ws6Zk3Tp8Hj5Fd0Ye", Open: 1, VG: "vg0", LV: "pool_tmeta"},
		{Name: "vg0-thin1", UUID: vg0 + "Gt5Rw1Vn8Kb3Zq6Lm9Xh2Jd4Fc7Sp0Ea", Open: 1, VG: "vg0", LV: "thin1"},
		{Name: "vg0-vm1--data", UUID: vg0 + "mCqVl6tBgE9j0TT5nqT1NFcRwri86yJ1", Open: 1, VG: "vg0", LV: "vm1-data"},
		{Name: "vg0-vm1--root", UUID: vg0 + "o6p5yeBmhhxMfd3Nn35L3DbdjkPPdLBL", Open: 1, VG: "vg0", LV: "vm1-root"},
		{Name: "vg1-vm2--root", UUID: "LVM-Wd3nLk8Qx1Rt5Vb9Mz2Hc6Jf4Gp7Sa0Ye3Uq8Ni5Ko2Lh9Rw4Tx7Bc1Vz6Dm3Fg", Open: 1, VG: "vg1", LV: "vm2-root"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ParseDMInfo mismatch (-want +got):\n%s", diff)
	}
	if got[0].LVM() || !got[1].LVM() {
		t.Errorf("LVM(): crypt %v, LV %v", got[0].LVM(), got[1].LVM())
	}
}

func TestParseDMInfoOddLines(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     int // devices read
		err      bool
	}{
		{"no devices", "No devices found\n", 0, false},
		{"a foreign name with the separator", "odd|name|CRYPT-x|1|||\n", 0, false},
		{"a foreign device without open count", "x|CRYPT-x||||\n", 0, false},
		{"an LVM device without open count", "vg0-a|LVM-xyz|?|vg0|a|\n", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := lvmlock.ParseDMInfo([]byte(tc.in))
			if (err != nil) != tc.err || len(got) != tc.want {
				t.Errorf("ParseDMInfo(%q) = %v, %v; want %d devices, error %v", tc.in, got, err, tc.want, tc.err)
			}
		})
	}
}

func TestParseDMTables(t *testing.T) {
	out, err := os.ReadFile("../testdata/lvm/dmsetup-table.txt")
	if err != nil {
		t.Fatal(err)
	}
	got := lvmlock.ParseDMTables(out)
	want := map[string][]lvmlock.DMTarget{
		"luks-3f1c0b4e-7b61-4c0a-9d7e-1e2a3b4c5d6e": {{Start: 0, Length: 3903488, Type: "crypt",
			Params: "aes-xts-plain64 :64:logon:cryptsetup:3f1c0b4e-7b61-4c0a-9d7e-1e2a3b4c5d6e-d0 0 8:2 32768"}},
		"vg0-lv--new":    {},
		"vg0-lvmlock":    {{Length: 524288, Type: "linear", Params: "8:16 2048"}},
		"vg0-pool":       {{Length: 20971520, Type: "linear", Params: "253:5 0"}},
		"vg0-pool-tpool": {{Length: 20971520, Type: "thin-pool", Params: "253:3 253:4 128 0 0"}},
		"vg0-pool_tdata": {{Length: 20971520, Type: "linear", Params: "8:16 4458496"}},
		"vg0-pool_tmeta": {{Length: 8192, Type: "linear", Params: "8:16 4450304"}},
		"vg0-thin1":      {{Length: 10485760, Type: "thin", Params: "253:5 1"}},
		"vg0-vm1--data":  {{Length: 4194304, Type: "error"}},
		"vg0-vm1--root":  {{Length: 8388608, Type: "linear", Params: "8:16 526336"}, {Start: 8388608, Length: 2097152, Type: "linear", Params: "8:16 25427968"}},
		"vg1-vm2--root":  {{Length: 8388608, Type: "linear", Params: "8:32 526336"}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ParseDMTables mismatch (-want +got):\n%s", diff)
	}
	for name, writable := range map[string]bool{"vg0-vm1--data": false, "vg0-lv--new": false, "vg0-vm1--root": true, "vg0-thin1": true} {
		if lvmlock.ErrorOnly(got[name]) == writable {
			t.Errorf("ErrorOnly(%s) = %v", name, !writable)
		}
	}
	odd := lvmlock.ParseDMTables([]byte("No devices found\nvg0-a: 0 x error\nvg0-b:\n"))
	if diff := cmp.Diff(map[string][]lvmlock.DMTarget{"vg0-a": {{}}, "vg0-b": {}}, odd); diff != "" {
		t.Errorf("odd lines (-want +got):\n%s", diff)
	}
	if lvmlock.ErrorOnly(odd["vg0-a"]) {
		t.Error("a target line that does not read counts as the error target")
	}
}

func TestParseLockdInfo(t *testing.T) {
	for file, want := range map[string]map[string]lvmlock.LockdLockspace{
		"lvmlockctl-info-dump-2.03.16.txt": {"vg0": {VG: "vg0", KillVG: true}, "vg1": {VG: "vg1"}},
		"lvmlockctl-info-dump-2.03.31.txt": {"vg0": {VG: "vg0", KillVG: true, DropVG: true}, "vg-data": {VG: "vg-data"}},
	} {
		out, err := os.ReadFile("../testdata/lvm/" + file)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, lvmlock.ParseLockdInfo(out)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", file, diff)
		}
	}
}

// hangingRunner is a command stuck in the kernel: it ignores ctx, as a
// process in D state ignores SIGKILL, until release is closed.
type hangingRunner struct{ release chan struct{} }

func (r hangingRunner) Run(context.Context, string, ...string) ([]byte, []byte, error) {
	<-r.release
	return nil, nil, nil
}

// TestWipeTableGivesUpAtTheDeadline: a wipe_table blocked in the kernel (a
// suspend waiting for storage that hangs) cannot be killed; the caller gets
// a timeout at its deadline all the same.
func TestWipeTableGivesUpAtTheDeadline(t *testing.T) {
	r := hangingRunner{release: make(chan struct{})}
	defer close(r.release)
	c := &lvmlock.Client{Runner: r, Log: zerolog.Nop()}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.WipeTable(ctx, "vg0-a")
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("WipeTable returned after %s, want about 100ms", took)
	}
	if !lvmlock.IsTimeout(err) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WipeTable = %v, want a timeout", err)
	}
	for _, f := range []func() error{
		func() error { _, err := c.DMDevices(ctx); return err },
		func() error { _, err := c.DMTables(ctx); return err },
		func() error { return c.RemoveDM(ctx, "vg0-a") },
	} {
		if err := f(); !lvmlock.IsTimeout(err) {
			t.Errorf("after the deadline: %v, want a timeout", err)
		}
	}
}

// The fake's dmsetup: a wipe turns the table to error, which the listing
// and the parsers see; the layer is no longer held open by its LV; an open
// device cannot be removed.
func TestFakeDMSetup(t *testing.T) {
	c := lvmfake.NewCluster(1)
	c.AddVG("vg0", true, "a", "pool")
	c.AddLayer("vg0", "pool", "tpool")
	c.Do(func(c *lvmfake.Cluster) {
		c.VGs["vg0"].LVs["a"].Holders[1] = lvmlock.ModeEx
		c.VGs["vg0"].LVs["pool"].Holders[1] = lvmlock.ModeEx
		c.Open[1][lvmlock.Ref{VG: "vg0", LV: "a"}] = true
	})
	cl := &lvmlock.Client{Runner: c.Host(1), Log: zerolog.Nop()}
	ctx := context.Background()
	if err := cl.WipeTable(ctx, "vg0-pool"); err != nil {
		t.Fatal(err)
	}
	devs, err := cl.DMDevices(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := cl.DMTables(ctx)
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		Name, LV, Layer string
		Open            int
		Error           bool
	}
	var got []row
	for _, d := range devs {
		got = append(got, row{d.Name, d.LV, d.Layer, d.Open, lvmlock.ErrorOnly(tables[d.Name])})
	}
	want := []row{{"vg0-a", "a", "", 1, false}, {"vg0-lvmlock", "lvmlock", "", 1, false},
		{"vg0-pool", "pool", "", 0, true}, {"vg0-pool-tpool", "pool", "tpool", 0, false}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("devices after wiping vg0-pool (-want +got):\n%s", diff)
	}
	if err := cl.RemoveDM(ctx, "vg0-a"); err == nil {
		t.Error("removing an open device succeeded")
	}
	// Each device goes alone; the LV is gone with its last one.
	if err := cl.RemoveDM(ctx, "vg0-pool"); err != nil || c.Writable(1, "vg0", "pool") || c.Mode(1, "vg0", "pool") != lvmlock.ModeEx {
		t.Errorf("RemoveDM(vg0-pool) = %v; want its device gone, the LV still active with its layer: %v", err, c.Mode(1, "vg0", "pool"))
	}
	if err := cl.RemoveDM(ctx, "vg0-pool-tpool"); err != nil || c.Mode(1, "vg0", "pool") != lvmlock.ModeNone {
		t.Errorf("RemoveDM(vg0-pool-tpool) = %v; want the LV gone: %v", err, c.Mode(1, "vg0", "pool"))
	}
}
