package hook

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lvhook/lvhook/lvmlock"
)

const poolDir = "../testdata/pools"

func readDomain(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("../testdata/domains", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func disk(vg, lv string, mode lvmlock.Mode, target, path string) Disk {
	return Disk{Ref: lvmlock.Ref{VG: vg, LV: lv}, Mode: mode, Target: target, Path: path}
}

func TestParseDomain(t *testing.T) {
	ex, sh := lvmlock.ModeEx, lvmlock.ModeSh
	tests := []struct {
		file string
		want *Domain
	}{
		{"block-three.xml", &Domain{Name: "vm1", UUID: "6f1c5b7e-2a1d-4c53-9a43-2b8f0d1e7c11", Disks: []Disk{
			disk("vg0", "vm1-root", ex, "vda", "/dev/vg0/vm1-root"),
			disk("vg0", "vm1-data", ex, "vdb", "/dev/mapper/vg0-vm1--data"),
			disk("vg0", "vm1-swap", ex, "vdc", "/dev/vg0/vm1-swap"),
		}}},
		{"volume-pool.xml", &Domain{Name: "vm-pool", UUID: "1b8f5a0c-94c7-4f0e-8f5e-0c3a1d2b4e55", Disks: []Disk{
			disk("vg0", "pooldisk", ex, "vda", "pool vgpool volume pooldisk"),
		}}},
		{"mixed.xml", &Domain{Name: "vm-mixed", UUID: "a3d9e2f1-5b6c-4d7e-8f90-1a2b3c4d5e6f", Disks: []Disk{
			disk("vg0", "mixed-root", ex, "vda", "/dev/vg0/mixed-root"),
		}}},
		{"shared-backing.xml", &Domain{Name: "vm-shared", UUID: "c0ffee00-1111-4222-8333-444455556666", Disks: []Disk{
			disk("vg1", "overlay", ex, "vda", "/dev/vg1/overlay"),
			disk("vg1", "golden", sh, "vda", "/dev/vg1/golden"),
			disk("vg0", "cluster-fs", sh, "vdb", "/dev/vg0/cluster-fs"),
			disk("vg0", "reference", sh, "vdc", "/dev/vg0/reference"),
		}}},
		{"optout.xml", &Domain{Name: "vm-optout", UUID: "0e7d1c2b-3a4f-4b5c-9d6e-7f8091a2b3c4", OptedOut: true, Disks: []Disk{
			disk("vg0", "optout-disk", ex, "vda", "/dev/vg0/optout-disk"),
		}}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := ParseDomain(readDomain(t, tt.file), poolDir)
			if err != nil {
				t.Fatalf("ParseDomain: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseDomain(%s) mismatch (-want +got):\n%s", tt.file, diff)
			}
		})
	}
}

func TestParseDomainErrors(t *testing.T) {
	wrap := func(devices string) string {
		return `<domain type='kvm'><name>bad</name><uuid>11111111-2222-3333-4444-555555555555</uuid><devices>` + devices + `</devices></domain>`
	}
	tests := []struct {
		name, xml, want string
	}{
		{"not xml", "this is not xml", "malformed domain XML"},
		{"truncated", "<domain><name>x</name><uuid>1", "malformed domain XML"},
		{"no uuid", "<domain><name>x</name></domain>", "no <name> or <uuid>"},
		{"wrong root", "<pool><name>x</name><uuid>1</uuid></pool>", "malformed domain XML"},
		{"unknown pool", wrap(`<disk type='volume'><source pool='nopool' volume='v'/><target dev='vda'/></disk>`), "storage pool nopool"},
		{"pool path escape", wrap(`<disk type='volume'><source pool='../etc' volume='v'/><target dev='vda'/></disk>`), "not a file name"},
		{"odd volume name", wrap(`<disk type='volume'><source pool='vgpool' volume='a b'/><target dev='vda'/></disk>`), "not a valid logical volume name"},
		{"unclean path", wrap(`<disk type='block'><source dev='/dev/vg0/../vg1/x'/><target dev='vda'/></disk>`), "not a clean path"},
		{"bad manage", `<domain><name>x</name><uuid>11111111-2222-3333-4444-555555555555</uuid><metadata><l:domain xmlns:l="https://lvhook.dev/xmlns/domain/1" manage="maybe"/></metadata></domain>`, `manage="maybe"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseDomain([]byte(tt.xml), poolDir)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseDomain error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

// Names and targets from the XML may hold any character: an error naming
// them stays one line.
func TestParseDomainErrorOneLine(t *testing.T) {
	xml := "<domain><name>a&#10;b</name><uuid>1</uuid><devices><disk type='volume'><source pool='nopool' volume='v'/><target dev='vd&#13;a'/></disk></devices></domain>"
	_, err := ParseDomain([]byte(xml), poolDir)
	want := `domain "a\nb": disk "vd\ra": storage pool nopool`
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("ParseDomain error = %q, want it to start with %q", err, want)
	}
}

func TestParseDevPath(t *testing.T) {
	tests := []struct {
		path string
		want *lvmlock.Ref
	}{
		{"/dev/vg0/disk1", &lvmlock.Ref{VG: "vg0", LV: "disk1"}},
		{"/dev/mapper/vg0-disk1", &lvmlock.Ref{VG: "vg0", LV: "disk1"}},
		{"/dev/mapper/my--vg-my--lv", &lvmlock.Ref{VG: "my-vg", LV: "my-lv"}},
		{"/dev/mapper/vg-a--b--c", &lvmlock.Ref{VG: "vg", LV: "a-b-c"}},
		{"/dev/vg.x/lv_1+2", &lvmlock.Ref{VG: "vg.x", LV: "lv_1+2"}},
		{"/dev/mapper/vg0-pool-tpool", nil}, // lvm layer device
		{"/dev/mapper/vg0-lv-real", nil},
		{"/dev/mapper/mpatha", nil},
		{"/dev/mapper/-x", nil},
		{"/dev/sda", nil},
		{"/dev/md/raid1", nil},
		{"/dev/disk/by-id/dm-name-vg0-disk1", nil},
		{"/dev/drbd/by-res/r0", nil},
		{"/dev/vg0/-bad", nil},
		{"/dev/vg0/a b", nil},
		{"/var/lib/libvirt/images/x.img", nil},
		{"", nil},
	}
	for _, tt := range tests {
		got, err := ParseDevPath(tt.path)
		if err != nil {
			t.Errorf("ParseDevPath(%q): %v", tt.path, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("ParseDevPath(%q) mismatch (-want +got):\n%s", tt.path, diff)
		}
	}
}

func TestReadXMLLimit(t *testing.T) {
	_, err := ReadXML(strings.NewReader(strings.Repeat("x", MaxXMLSize+1)))
	if err == nil || !strings.Contains(err.Error(), "larger than 16 MiB") {
		t.Errorf("ReadXML of 16 MiB + 1 = %v, want a size error", err)
	}
	data, err := ReadXML(strings.NewReader("<domain/>"))
	if err != nil || string(data) != "<domain/>" {
		t.Errorf("ReadXML = %q, %v", data, err)
	}
}

// FuzzParseDomain: any input gives a domain or an error, never a panic, and
// every LV found has names lvm would accept.
func FuzzParseDomain(f *testing.F) {
	entries, _ := os.ReadDir("../testdata/domains")
	for _, e := range entries {
		f.Add(readDomain(f, e.Name()))
	}
	f.Add([]byte(`<domain><name>a</name><uuid>b</uuid><devices><disk type='block'><source dev='/dev/mapper/a--b-c'/><backingStore type='block'><source dev='/dev/x/y'/></backingStore></disk></devices></domain>`))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := ParseDomain(data, poolDir)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("multi-line error %q", err)
			}
			return
		}
		for _, disk := range d.Disks {
			if checkNames(disk.Ref) != nil {
				t.Errorf("invalid LV %v from %q", disk.Ref, data)
			}
			if disk.Mode != lvmlock.ModeEx && disk.Mode != lvmlock.ModeSh {
				t.Errorf("disk %v has mode %q", disk.Ref, disk.Mode)
			}
		}
	})
}
