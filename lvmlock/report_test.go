package lvmlock

import (
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseLVs(t *testing.T) {
	out, err := os.ReadFile("../testdata/lvm/lvs.json")
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseLVs(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []LV{
		{VG: "vg0", Name: "disk1", UUID: "Xc3tfr-0dKe-n2Qd-1Jyk-DU4M-cWbP-ztV3lb", LockType: "sanlock", Segtype: "linear", Attr: "-wi-a-----", Active: true, LockArgs: "1.0.0:70254592"},
		{VG: "vg0", Name: "disk2", UUID: "q3H0Ze-Sy6q-Vvzu-P6Rf-RX4N-8bfC-N1bh0u", LockType: "sanlock", Segtype: "linear", Attr: "-wi-------", LockArgs: "1.0.0:71303168"},
		{VG: "vg0", Name: "thin1", UUID: "b6Gx3E-8rXW-7TyK-3mVz-Y1sQ-aQ0c-6kcQZv", LockType: "sanlock", Segtype: "thin", Attr: "Vwi---tz--", LockArgs: ""},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ParseLVs mismatch (-want +got):\n%s", diff)
	}
	if got[2].SharedActivationProblem() == "" || got[0].SharedActivationProblem() != "" {
		t.Errorf("SharedActivationProblem: thin %q, linear %q", got[2].SharedActivationProblem(), got[0].SharedActivationProblem())
	}
	if _, err := ParseLVs([]byte("not json")); err == nil {
		t.Errorf("ParseLVs of garbage: no error")
	}
}

func TestParseLockctl(t *testing.T) {
	out, err := os.ReadFile("../testdata/lvm/lvmlockctl-i.txt")
	if err != nil {
		t.Fatal(err)
	}
	got := ParseLockctl(out)
	want := Locks{"vg0": {VG: "vg0", LockType: "sanlock", LVs: map[string]Mode{
		"Xc3tfr-0dKe-n2Qd-1Jyk-DU4M-cWbP-ztV3lb": ModeEx,
		"q3H0Ze-Sy6q-Vvzu-P6Rf-RX4N-8bfC-N1bh0u": ModeSh,
	}}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ParseLockctl mismatch (-want +got):\n%s", diff)
	}
	if !got.Started("vg0") || got.Started("vg1") {
		t.Errorf("Started: vg0 %v vg1 %v", got.Started("vg0"), got.Started("vg1"))
	}
	if len(ParseLockctl([]byte("garbage\nLK LV ex orphan\n"))) != 0 {
		t.Errorf("lines outside a VG block must be ignored")
	}
}
