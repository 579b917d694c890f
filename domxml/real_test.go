package domxml

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lvhook/lvhook/internal/realdata"
	"github.com/lvhook/lvhook/lvmlock"
)

// The XML real libvirtd wrote on the hook's stdin (prepare begin) and `virsh
// dumpxml` of the running domains, captured on the harness, per release.
func TestParseRealDomains(t *testing.T) {
	ex, sh := lvmlock.ModeEx, lvmlock.ModeSh
	lv := func(name string, mode lvmlock.Mode) lvmlock.Target {
		return lvmlock.Target{Ref: lvmlock.Ref{VG: "vg0", LV: name}, Mode: mode}
	}
	want := map[string]struct {
		optOut bool
		lvs    []lvmlock.Target
	}{
		"t1":      {false, []lvmlock.Target{lv("t1", ex)}},
		"t3":      {false, []lvmlock.Target{lv("t3a", ex), lv("t3b", ex), lv("t3c", ex)}},
		"tpool":   {false, []lvmlock.Target{lv("pool1", ex)}},
		"tmixed":  {false, []lvmlock.Target{lv("mixed1", ex)}},
		"tshare1": {false, []lvmlock.Target{lv("share1", sh)}},
		"toptout": {true, []lvmlock.Target{lv("optout1", ex)}},
	}
	realdata.Run(t, func(t *testing.T, r realdata.Release) {
		var files []string
		for _, pattern := range []string{"hook-stdin/*.prepare.begin.xml", "domains/*.running.xml", "domains/*.inactive.xml"} {
			files = append(files, r.Glob(t, pattern)...)
		}
		for _, f := range files {
			name, _, _ := strings.Cut(filepath.Base(f), ".")
			rel, err := filepath.Rel(r.Dir, f)
			if err != nil {
				t.Fatal(err)
			}
			t.Run(filepath.ToSlash(rel), func(t *testing.T) {
				w, ok := want[name]
				if !ok {
					t.Fatalf("no expectation for domain %s", name)
				}
				data, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				d, err := Parse(data, poolDir)
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				var got []lvmlock.Target
				for _, disk := range d.Disks {
					got = append(got, lvmlock.Target{Ref: disk.Ref, Mode: disk.Mode})
				}
				if d.Name != name || d.OptedOut != w.optOut {
					t.Errorf("name %q opted out %v, want %q %v", d.Name, d.OptedOut, name, w.optOut)
				}
				if diff := cmp.Diff(w.lvs, got); diff != "" {
					t.Errorf("LVs (-want +got):\n%s", diff)
				}
			})
		}
	})
}
