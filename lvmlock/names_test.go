package lvmlock_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/lvmlock/lvmfake"
)

// hostile are names a peer or a domain XML could send to make lvm read them
// as options or as something else than one VG or LV.
var hostile = []string{
	"-an",
	"--config=log{file=\"/etc/cron.d/x\" overwrite=1 level=7}",
	"vg0\n--config=x",
	"..",
	".",
	"",
	"vg0/a",
	"a b",
	"-ffoo",
	"vg0 --x",
	"vg\x00",
	string(make([]byte, 128)),
}

// TestRefusesInvalidNames: lvmlock runs nothing for a name lvm would not take
// as a plain VG or LV name, whatever the entry point.
func TestRefusesInvalidNames(t *testing.T) {
	ops := []struct {
		name string
		run  func(cl *lvmlock.Client, st *lvmlock.State, bad lvmlock.Ref) error
	}{
		{"State", func(cl *lvmlock.Client, _ *lvmlock.State, bad lvmlock.Ref) error {
			_, err := cl.State(context.Background(), true, "vg0", bad.VG)
			return err
		}},
		{"LVs", func(cl *lvmlock.Client, _ *lvmlock.State, bad lvmlock.Ref) error {
			_, _, err := cl.LVs(context.Background(), bad.VG)
			return err
		}},
		{"Activate", func(cl *lvmlock.Client, st *lvmlock.State, bad lvmlock.Ref) error {
			_, err := cl.Activate(context.Background(), st, []lvmlock.Target{
				{Ref: ref("vg0", "a"), Mode: lvmlock.ModeEx}, {Ref: bad, Mode: lvmlock.ModeEx}})
			return err
		}},
		{"Deactivate", func(cl *lvmlock.Client, _ *lvmlock.State, bad lvmlock.Ref) error {
			_, err := cl.Deactivate(context.Background(), nil, []lvmlock.Ref{ref("vg0", "a"), bad})
			return err
		}},
		{"Convert", func(cl *lvmlock.Client, _ *lvmlock.State, bad lvmlock.Ref) error {
			st := lvmlock.Assume(map[lvmlock.Ref]lvmlock.Mode{ref("vg0", "a"): lvmlock.ModeSh, bad: lvmlock.ModeSh})
			_, err := cl.Convert(context.Background(), st, []lvmlock.Target{
				{Ref: ref("vg0", "a"), Mode: lvmlock.ModeEx}, {Ref: bad, Mode: lvmlock.ModeEx}})
			return err
		}},
		// One name each: a device name (VG-LV) or a VG name.
		{"WipeTable", func(cl *lvmlock.Client, _ *lvmlock.State, bad lvmlock.Ref) error {
			return cl.WipeTable(context.Background(), bad.VG)
		}},
		{"RemoveDM", func(cl *lvmlock.Client, _ *lvmlock.State, bad lvmlock.Ref) error {
			return cl.RemoveDM(context.Background(), bad.VG)
		}},
		{"StartLockspace", func(cl *lvmlock.Client, _ *lvmlock.State, bad lvmlock.Ref) error {
			return cl.StartLockspace(context.Background(), bad.VG)
		}},
	}
	for _, op := range ops {
		for _, name := range hostile {
			for _, bad := range []lvmlock.Ref{{VG: name, LV: "a"}, {VG: "vg0", LV: name}} {
				switch op.name {
				case "State", "LVs", "WipeTable", "RemoveDM", "StartLockspace":
					if bad.VG == "vg0" {
						continue // these take one name
					}
				}
				t.Run(fmt.Sprintf("%s(%.24q)", op.name, bad.String()), func(t *testing.T) {
					c := lvmfake.NewCluster(2)
					c.AddVG("vg0", true, "a")
					cl := client(c, 1)
					st := lvmlock.Assume(map[lvmlock.Ref]lvmlock.Mode{})
					err := op.run(cl, st, bad)
					if !lvmlock.IsInvalidName(err) {
						t.Errorf("%s(%q) = %v, want a *NameError", op.name, bad, err)
					}
					if calls := c.Calls(1); len(calls) != 0 {
						t.Errorf("%s(%q) ran %q, want nothing run", op.name, bad, calls)
					}
				})
			}
		}
	}
}

func TestValidRef(t *testing.T) {
	long := strings.Repeat("a", 127)
	tests := []struct {
		ref  lvmlock.Ref
		want string // error, "" for valid
	}{
		{ref("vg0", "vm1-disk_0.img+x"), ""},
		{ref(long, long), ""},
		{ref(long+"a", "a"), `"` + long + `a" is not a valid volume group name`},
		{ref("vg0", "-an"), `"-an" is not a valid logical volume name`},
		{ref("--config=x", "a"), `"--config=x" is not a valid volume group name`},
		{ref("vg0", ".."), `".." is not a valid logical volume name`},
		{ref("vg0", "a\nb"), `"a\nb" is not a valid logical volume name`},
		{ref("vg0", "a\n"), `"a\n" is not a valid logical volume name`},
		{ref("", "a"), `"" is not a valid volume group name`},
		{ref("vg0", "a/b"), `"a/b" is not a valid logical volume name`},
		{ref("vg0", "é"), `"é" is not a valid logical volume name`},
	}
	for _, tc := range tests {
		got := ""
		if err := lvmlock.ValidRef(tc.ref); err != nil {
			got = err.Error()
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("ValidRef(%q) mismatch (-want +got):\n%s", tc.ref, diff)
		}
	}
}
