package lvmlock_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"

	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/lvmlock/lvmfake"
)

// argvRecorder keeps every argv it runs, as given, and lets the fake answer.
type argvRecorder struct {
	next lvmlock.Runner
	mu   sync.Mutex
	argv [][]string
}

func (r *argvRecorder) Run(ctx context.Context, name string, args ...string) ([]byte, []byte, error) {
	r.mu.Lock()
	r.argv = append(r.argv, append([]string{name}, args...))
	r.mu.Unlock()
	return r.next.Run(ctx, name, args...)
}

const lvsFields = "vg_name,lv_name,lv_uuid,vg_lock_type,segtype,lv_attr,lv_active_locally,lv_lockargs"

// TestEveryArgvEndsOptions builds every command line lvmlock can build and
// checks that lvs and lvchange end their options with "--" before the first
// name: a name that slipped past ValidName would still not be read as an
// option.
// lvmlockctl is given no operand; sanlock does not accept "--" (its own
// parser in main.c, read_command_line, takes "--" for an unknown option),
// so the lockspace and the lease path it is given are checked instead
// (TestSanlockRefusesInvalidNames).
func TestEveryArgvEndsOptions(t *testing.T) {
	ls := lvmlock.SanlockLockspace{Name: "lvm_vg0", HostID: 1, Path: "/dev/mapper/vg0-lvmlock"}
	tests := []struct {
		name string
		// setup arranges the cluster; run makes the calls.
		setup func(c *lvmfake.Cluster)
		run   func(ctx context.Context, cl *lvmlock.Client, sl lvmlock.Sanlock) error
		want  [][]string
	}{
		{name: "state of two VGs, with lock modes",
			setup: func(c *lvmfake.Cluster) { c.VGs["vg0"].LVs["a"].Holders[1] = lvmlock.ModeEx },
			run: func(ctx context.Context, cl *lvmlock.Client, _ lvmlock.Sanlock) error {
				_, err := cl.State(ctx, true, "vg0", "vg1")
				return err
			},
			want: [][]string{
				{"lvs", "--reportformat", "json", "--options", lvsFields, "--", "vg0", "vg1"},
				{"lvmlockctl", "--info"},
			}},
		{name: "lvs of every VG",
			run: func(ctx context.Context, cl *lvmlock.Client, _ lvmlock.Sanlock) error {
				_, _, err := cl.LVs(ctx)
				return err
			},
			want: [][]string{{"lvs", "--reportformat", "json", "--options", lvsFields, "--"}}},
		{name: "activate ex and sh",
			run: func(ctx context.Context, cl *lvmlock.Client, _ lvmlock.Sanlock) error {
				_, err := cl.Activate(ctx, lvmlock.Assume(nil), []lvmlock.Target{
					{Ref: ref("vg0", "a"), Mode: lvmlock.ModeEx}, {Ref: ref("vg0", "b"), Mode: lvmlock.ModeSh}})
				return err
			},
			want: [][]string{
				{"lvchange", "-aey", "--select", lvmlock.SharedOnly, "--", "vg0/a"},
				{"lvchange", "-asy", "--select", lvmlock.SharedOnly, "--", "vg0/b"},
			}},
		{name: "activation rolled back",
			setup: func(c *lvmfake.Cluster) {
				c.VGs["vg0"].LVs["b"].Holders[1] = lvmlock.ModeSh
				c.VGs["vg1"].LVs["c"].Holders[2] = lvmlock.ModeEx
			},
			run: func(ctx context.Context, cl *lvmlock.Client, _ lvmlock.Sanlock) error {
				st := lvmlock.Assume(map[lvmlock.Ref]lvmlock.Mode{ref("vg0", "b"): lvmlock.ModeSh})
				_, err := cl.Activate(ctx, st, []lvmlock.Target{
					{Ref: ref("vg0", "a"), Mode: lvmlock.ModeEx}, {Ref: ref("vg0", "b"), Mode: lvmlock.ModeEx},
					{Ref: ref("vg1", "c"), Mode: lvmlock.ModeEx}})
				if !lvmlock.IsLockedByOtherHost(err) {
					t.Errorf("Activate() = %v, want locked by other host", err)
				}
				return nil
			},
			want: [][]string{
				{"lvchange", "-aey", "--select", lvmlock.SharedOnly, "--", "vg0/a", "vg0/b"},
				{"lvchange", "-aey", "--select", lvmlock.SharedOnly, "--", "vg1/c"},
				{"lvchange", "-an", "--select", lvmlock.SharedOnly, "--", "vg0/a"},
				{"lvchange", "-an", "--select", lvmlock.SharedOnly, "--", "vg1/c"},
				{"lvchange", "-asy", "--select", lvmlock.SharedOnly, "--", "vg0/b"},
			}},
		{name: "deactivate",
			run: func(ctx context.Context, cl *lvmlock.Client, _ lvmlock.Sanlock) error {
				_, err := cl.Deactivate(ctx, nil, []lvmlock.Ref{ref("vg0", "a"), ref("vg1", "c")})
				return err
			},
			want: [][]string{
				{"lvchange", "-an", "--select", lvmlock.SharedOnly, "--", "vg0/a"},
				{"lvchange", "-an", "--select", lvmlock.SharedOnly, "--", "vg1/c"},
			}},
		{name: "convert",
			setup: func(c *lvmfake.Cluster) { c.VGs["vg0"].LVs["a"].Holders[1] = lvmlock.ModeSh },
			run: func(ctx context.Context, cl *lvmlock.Client, _ lvmlock.Sanlock) error {
				st := lvmlock.Assume(map[lvmlock.Ref]lvmlock.Mode{ref("vg0", "a"): lvmlock.ModeSh})
				_, err := cl.Convert(ctx, st, []lvmlock.Target{{Ref: ref("vg0", "a"), Mode: lvmlock.ModeEx}})
				return err
			},
			want: [][]string{{"lvchange", "-aey", "--select", lvmlock.SharedOnly, "--", "vg0/a"}}},
		{name: "sanlock reads",
			setup: func(c *lvmfake.Cluster) { c.VGs["vg0"].LVs["a"].Holders[2] = lvmlock.ModeEx },
			run: func(ctx context.Context, cl *lvmlock.Client, sl lvmlock.Sanlock) error {
				if _, err := sl.Lockspaces(ctx); err != nil {
					return err
				}
				if _, err := sl.Hosts(ctx, ls.Name); err != nil {
					return err
				}
				lvs, _, err := cl.LVs(ctx, "vg0")
				if err != nil {
					return err
				}
				_, err = sl.Leases(ctx, ls, lvs)
				return err
			},
			want: [][]string{
				{"sanlock", "client", "status"},
				{"sanlock", "client", "host_status", "-s", "lvm_vg0", "-D"},
				{"lvs", "--reportformat", "json", "--options", lvsFields, "--", "vg0"},
				{"sanlock", "direct", "dump", "/dev/mapper/vg0-lvmlock:70254592:3145728"},
			}},
		{name: "kill-vg's reads and wipe",
			setup: func(c *lvmfake.Cluster) { c.VGs["vg0"].LVs["a"].Holders[1] = lvmlock.ModeEx },
			run: func(ctx context.Context, cl *lvmlock.Client, _ lvmlock.Sanlock) error {
				if _, err := cl.LockdInfo(ctx); err != nil {
					return err
				}
				if _, err := cl.DMDevices(ctx); err != nil {
					return err
				}
				if _, err := cl.DMTables(ctx); err != nil {
					return err
				}
				return cl.WipeTable(ctx, "vg0-a")
			},
			want: [][]string{
				{"lvmlockctl", "--info", "--dump"},
				{"dmsetup", "info", "-c", "--noheadings", "--separator", "|", "-o", "name,uuid,open,vg_name,lv_name,lv_layer"},
				{"dmsetup", "table"},
				{"dmsetup", "wipe_table", "--", "vg0-a"},
			}},
		{name: "kill-vg --recover",
			setup: func(c *lvmfake.Cluster) { c.VGs["vg0"].LVs["a"].Holders[1] = lvmlock.ModeEx },
			run: func(ctx context.Context, cl *lvmlock.Client, _ lvmlock.Sanlock) error {
				if err := cl.RemoveDM(ctx, "vg0-a"); err != nil {
					return err
				}
				return cl.StartLockspace(ctx, "vg1")
			},
			want: [][]string{
				{"dmsetup", "remove", "--", "vg0-a"},
				{"vgchange", "--lock-start", "--", "vg1"},
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := lvmfake.NewCluster(2)
			c.AddVG("vg0", true, "a", "b", "iso")
			c.AddVG("vg1", true, "c")
			if tc.setup != nil {
				c.Do(tc.setup)
			}
			rec := &argvRecorder{next: c.Host(1)}
			cl := &lvmlock.Client{Runner: rec, Log: zerolog.Nop()}
			if err := tc.run(context.Background(), cl, lvmlock.Sanlock{Runner: rec}); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, rec.argv); diff != "" {
				t.Errorf("command lines (-want +got):\n%s", diff)
			}
			for _, argv := range rec.argv {
				checkEndOfOptions(t, argv)
			}
		})
	}
}

// checkEndOfOptions fails unless lvs, lvchange, vgchange and dmsetup have
// "--" before their first name (any argument that names a VG of the test
// cluster, or a device of one), and lvmlockctl has no operand.
func checkEndOfOptions(t *testing.T, argv []string) {
	t.Helper()
	isName := func(a string) bool {
		vg, _, _ := strings.Cut(a, "/")
		return vg == "vg0" || vg == "vg1"
	}
	switch argv[0] {
	case "dmsetup":
		// Device names are VG-LV; info and table name none.
		dev := slices.IndexFunc(argv, func(a string) bool { return strings.HasPrefix(a, "vg0-") || strings.HasPrefix(a, "vg1-") })
		end := slices.Index(argv, "--")
		if dev >= 0 && (end < 0 || end > dev) || dev < 0 && end >= 0 {
			t.Errorf("%q: a device not after \"--\", or \"--\" without a device", argv)
		}
	case "lvs", "lvchange", "vgchange":
		end := slices.Index(argv, "--")
		first := slices.IndexFunc(argv, isName)
		if end < 0 || first >= 0 && first < end {
			t.Errorf("%q: no \"--\" before the first name", argv)
		}
		if argv[0] == "lvchange" && !slices.Equal(argv[2:5], []string{"--select", lvmlock.SharedOnly, "--"}) {
			t.Errorf("%q: not lvchange FLAG --select %s -- VG/LV...", argv, lvmlock.SharedOnly)
		}
	case "lvmlockctl":
		for _, a := range argv[1:] {
			if !strings.HasPrefix(a, "-") {
				t.Errorf("%q: lvmlockctl given an operand", argv)
			}
		}
	case "sanlock":
		if slices.Contains(argv, "--") {
			t.Errorf("%q: sanlock does not accept \"--\"", argv)
		}
	default:
		t.Errorf("%q: a command this test does not know", argv)
	}
}

// TestSanlockRefusesInvalidNames: sanlock takes no "--", so the lockspace
// and lease device it is given are checked, and nothing runs for a bad one.
func TestSanlockRefusesInvalidNames(t *testing.T) {
	lvs := []lvmlock.LV{{VG: "vg0", Name: "a", LockArgs: "1.0.0:70254592"}}
	tests := []struct {
		name string
		run  func(ctx context.Context, sl lvmlock.Sanlock) error
	}{
		{"lockspace as an option", func(ctx context.Context, sl lvmlock.Sanlock) error {
			_, err := sl.Hosts(ctx, "-D")
			return err
		}},
		{"lockspace with sanlock's separator", func(ctx context.Context, sl lvmlock.Sanlock) error {
			_, err := sl.Hosts(ctx, "lvm_vg0:1:/dev/sda:0")
			return err
		}},
		{"lockspace longer than sanlock's 48 bytes", func(ctx context.Context, sl lvmlock.Sanlock) error {
			_, err := sl.Hosts(ctx, "lvm_"+strings.Repeat("v", 45))
			return err
		}},
		{"relative lease path", func(ctx context.Context, sl lvmlock.Sanlock) error {
			_, err := sl.Leases(ctx, lvmlock.SanlockLockspace{Name: "lvm_vg0", Path: "-h"}, lvs)
			return err
		}},
		{"lease path with a newline", func(ctx context.Context, sl lvmlock.Sanlock) error {
			_, err := sl.Leases(ctx, lvmlock.SanlockLockspace{Name: "lvm_vg0", Path: "/dev/x\n-h"}, lvs)
			return err
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := lvmfake.NewCluster(1)
			err := tc.run(context.Background(), lvmlock.Sanlock{Runner: c.Host(1)})
			if !lvmlock.IsInvalidName(err) {
				t.Errorf("error = %v, want a *NameError", err)
			}
			if calls := c.Calls(1); len(calls) != 0 {
				t.Errorf("ran %q, want nothing run", calls)
			}
		})
	}
}
