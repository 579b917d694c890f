package lvmlock

// Tests over outputs captured from real lvm, lvmlockd and sanlock on the
// two-host harness, once per release (testdata/real/<release>, written by
// testdata/harness/capture.sh; see internal/realdata).

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lvhook/lvhook/internal/realdata"
)

func TestClassifyRealErrors(t *testing.T) {
	want := map[string]struct {
		kind     Kind
		failures []Failure
	}{
		"locked-by-other-host":    {KindLockedByOtherHost, []Failure{{Kind: KindLockedByOtherHost, VG: "vg0", LV: "t1"}}},
		"locked-by-other-host-sh": {KindLockedByOtherHost, []Failure{{Kind: KindLockedByOtherHost, VG: "vg0", LV: "t1"}}},
		"ex-while-other-host-sh":  {KindLockedByOtherHost, []Failure{{Kind: KindLockedByOtherHost, VG: "vg0", LV: "share1"}}},
		"incompatible-mode":       {KindIncompatibleMode, []Failure{{Kind: KindIncompatibleMode, VG: "vg0", LV: "share1"}}},
		"lockspace-not-started":   {KindLockspaceNotStarted, []Failure{{Kind: KindLockspaceNotStarted, VG: "vg0"}}},
		"lockspace-starting":      {KindLockspaceStarting, []Failure{{Kind: KindLockspaceStarting, VG: "vg0"}, {Kind: KindLockspaceNotStarted, VG: "vg0"}}},
		"lv-in-use":               {KindInUse, []Failure{{Kind: KindInUse, VG: "vg0", LV: "t1"}}},
		"lv-missing":              {KindLVNotFound, []Failure{{Kind: KindLVNotFound, VG: "vg0", LV: "nosuchlv"}}},
		"lv-missing-json":         {KindLVNotFound, []Failure{{Kind: KindLVNotFound, VG: "vg0", LV: "nosuchlv"}}},
		"lvmlockd-not-running":    {KindLvmlockdNotRunning, []Failure{{Kind: KindLockspaceNotStarted, VG: "vg0"}}},
		"vg-missing":              {KindVGNotFound, []Failure{{Kind: KindVGNotFound, VG: "nosuchvg"}}},
	}
	realdata.Run(t, func(t *testing.T, r realdata.Release) {
		// Every case above must be captured, and every captured case expected.
		cases := map[string]bool{}
		for name := range want {
			cases[name] = true
		}
		for _, f := range r.Glob(t, "lvm-errors/*.stderr") {
			cases[strings.TrimSuffix(filepath.Base(f), ".stderr")] = true
		}
		names := make([]string, 0, len(cases))
		for name := range cases {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			t.Run(name, func(t *testing.T) {
				w, ok := want[name]
				if !ok {
					t.Fatalf("captured case %s has no expectation here: add one", name)
				}
				stderr := r.Read(t, "lvm-errors/"+name+".stderr")
				stdout := r.Read(t, "lvm-errors/"+name+".stdout")
				if extra := reportErrors(stdout); extra != "" {
					stderr = append(append(stderr, '\n'), extra...)
				}
				kind, failures := classify(string(stderr))
				if kind != w.kind {
					t.Errorf("kind = %v, want %v", kind, w.kind)
				}
				if diff := cmp.Diff(w.failures, failures); diff != "" {
					t.Errorf("failures (-want +got):\n%s", diff)
				}
			})
		}
	})
}

func TestParseRealLockctl(t *testing.T) {
	realdata.Run(t, func(t *testing.T, r realdata.Release) {
		// The LV UUIDs change with each capture (capture.sh): take them from
		// the lvs report captured with the same cluster.
		uuid := map[string]string{}
		for _, lv := range realLVs(t, r) {
			uuid[lv.Name] = lv.UUID
		}
		locks := ParseLockctl(r.Read(t, "lvmlockctl-i-ex-sh.txt"))
		want := map[string]Mode{uuid["t1"]: ModeEx, uuid["share1"]: ModeSh}
		if diff := cmp.Diff(want, locks["vg0"].LVs); diff != "" {
			t.Errorf("host1 locks (-want +got):\n%s", diff)
		}
		if locks["vg0"].LockType != "sanlock" || len(locks) != 1 {
			t.Errorf("lockspaces = %v, want vg0 (sanlock) only", locks)
		}
		host2 := ParseLockctl(r.Read(t, "lvmlockctl-i-sh.txt"))
		if m := host2.Mode("vg0", uuid["share1"]); m != ModeSh {
			t.Errorf("host2 share1 = %q, want sh", m)
		}
	})
}

// realLVs parses a release's captured lvs report.
func realLVs(t *testing.T, r realdata.Release) []LV {
	t.Helper()
	lvs, err := ParseLVs(r.Read(t, "lvs-report.json"))
	if err != nil {
		t.Fatal(err)
	}
	return lvs
}

func TestParseRealLVs(t *testing.T) {
	realdata.Run(t, func(t *testing.T, r realdata.Release) {
		lvs := realLVs(t, r)
		active := map[string]bool{}
		for _, lv := range lvs {
			if lv.VG != "vg0" || lv.UUID == "" {
				t.Errorf("row %+v: want vg0 and a UUID", lv)
			}
			active[lv.Name] = lv.Active
		}
		// At capture time t1 ran ex and share1 sh on host1.
		if !active["t1"] || !active["share1"] || active["t3a"] {
			t.Errorf("active = %v, want t1 and share1 only", active)
		}
	})
}

func TestRealSharedVGs(t *testing.T) {
	realdata.Run(t, func(t *testing.T, r realdata.Release) {
		vgs, err := parseSharedVGs(r.Read(t, "vgs-report.json"))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(vgs, []string{"vg0"}) {
			t.Errorf("shared VGs = %v, want [vg0]", vgs)
		}
	})
}

func TestRealKillVGInputs(t *testing.T) {
	realdata.Run(t, func(t *testing.T, r realdata.Release) {
		if got, want := ParseLockdInfo(r.Read(t, "lvmlockctl-info-dump.txt")), (map[string]LockdLockspace{"vg0": {VG: "vg0"}}); !cmp.Equal(got, want) {
			t.Errorf("lockd info: %v, want %v", got, want)
		}
		devs, err := ParseDMInfo(r.Read(t, "dmsetup-info.txt"))
		if err != nil || len(devs) != 1 || devs[0].Name != "vg0-lvmlock" || devs[0].VG != "vg0" || devs[0].LV != "lvmlock" || devs[0].Layer != "" || !devs[0].LVM() {
			t.Errorf("dmsetup info: %+v, %v", devs, err)
		}
		tables := ParseDMTables(r.Read(t, "dmsetup-table.txt"))
		if tb := tables["vg0-lvmlock"]; len(tables) != 1 || len(tb) != 1 || tb[0].Type != "linear" || ErrorOnly(tb) {
			t.Errorf("dmsetup table: %+v", tables)
		}
	})
}
