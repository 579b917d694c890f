package domxml

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
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
		{"evacuate-priority.xml", &Domain{Name: "db1", UUID: "7a0c3e91-5d2b-4f6a-8e17-3c9b2d4f6a81",
			Evacuate: EvacuateAttrs{Priority: ptr("50"), Fallback: ptr("managedsave")}, Disks: []Disk{
				disk("vg0", "db1-root", ex, "vda", "/dev/vg0/db1-root"),
			}}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := Parse(readDomain(t, tt.file), poolDir)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Parse(%s) mismatch (-want +got):\n%s", tt.file, diff)
			}
		})
	}
}

func ptr(s string) *string { return &s }

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
			_, err := Parse([]byte(tt.xml), poolDir)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

// Names and targets from the XML may hold any character: an error naming
// them stays one line.
func TestParseDomainErrorOneLine(t *testing.T) {
	xml := "<domain><name>a&#10;b</name><uuid>1</uuid><devices><disk type='volume'><source pool='nopool' volume='v'/><target dev='vd&#13;a'/></disk></devices></domain>"
	_, err := Parse([]byte(xml), poolDir)
	want := `domain "a\nb": disk "vd\ra": storage pool nopool`
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Parse error = %q, want it to start with %q", err, want)
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
		{"/dev/disk/by-id/dm-name-vg0-disk1", &lvmlock.Ref{VG: "vg0", LV: "disk1"}},
		{"/dev/disk/by-id/dm-name-my--vg-my--lv", &lvmlock.Ref{VG: "my-vg", LV: "my-lv"}},
		{"/dev/disk/by-id/dm-name-mpatha", nil},
		{"/dev/disk/by-id/dm-name--x", nil},
		{"/dev/disk/by-id/dm-name-vg0-pool-tpool", nil},
		{"/dev/disk/by-id/dm-name-", nil},
		{"/dev/disk/by-id/dm-uuid-LVM-R8cJ2nQ4tW6yB1dF3hK5mP7sV9xZ0aCegT5uH7iK9lM1nO3pQ5rS7tU9vW1xY3zA", nil},
		{"/dev/disk/by-id/wwn-0x5000c500a1b2c3d4", nil},
		{"/dev/dm-3", nil},
		{"/dev/block/253:3", nil},
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
	_, err := Read(strings.NewReader(strings.Repeat("x", MaxSize+1)))
	if err == nil || !strings.Contains(err.Error(), "larger than 16 MiB") {
		t.Errorf("Read of 16 MiB + 1 = %v, want a size error", err)
	}
	data, err := Read(strings.NewReader("<domain/>"))
	if err != nil || string(data) != "<domain/>" {
		t.Errorf("Read = %q, %v", data, err)
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
	for _, tt := range refusals {
		f.Add([]byte(wrapDevices(tt.devices)))
	}
	// lvhook's metadata element with the evacuation attributes, good and bad.
	for _, attrs := range []string{`priority="7" fallback="leave"`, `priority="-1000"`, `priority="1e3" fallback="reboot"`, `priority="" fallback=""`, `manage="no" priority=" 12 "`} {
		f.Add([]byte(`<domain><name>a</name><uuid>b</uuid><metadata><l:domain xmlns:l="` + MetadataNS + `" ` + attrs + `/></metadata></domain>`))
	}
	for _, dev := range []string{"/dev/dm-3", "/dev/block/253:4", "/dev/block/8:0", "/dev/dm-10", "/dev/dm-15", "/dev/dm-14", "/dev/disk/by-id/dm-name-luks-x", "/dev/disk/by-id/dm-uuid-LVM-" + testVGUUID + testLVUUID, "/dev/disk/by-id/dm-uuid-LVM-" + testVGUUID + testBadLVUUID} {
		f.Add([]byte(wrapDevices(`<disk type='block'><source dev='` + dev + `'/><mirror type='file' file='` + dev + `'><source file='` + dev + `'/></mirror><target dev='vda'/></disk>`)))
	}
	p := testParser()
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := p.Parse(data)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("multi-line error %q", err)
			}
			return
		}
		// Whatever the attributes hold, evacuate gets usable values, or
		// the defaults with an error of one line.
		ev, err := d.Evacuation()
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("multi-line evacuation error %q", err)
		}
		if ev.Priority < MinPriority || ev.Priority > MaxPriority || ev.Fallback != "" && !slices.Contains(Fallbacks, ev.Fallback) {
			t.Errorf("Evacuation() = %+v from %q", ev, data)
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

// The UUIDs of the LV the fake lvm lookup knows, and of one it names badly.
const (
	testVGUUID    = "R8cJ2nQ4tW6yB1dF3hK5mP7sV9xZ0aCe"
	testLVUUID    = "gT5uH7iK9lM1nO3pQ5rS7tU9vW1xY3zA"
	testBadLVUUID = "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"
)

// testParser is a Parser over a fake /dev and sysfs:
//
//	dm-3  vg0/kernel-dm        253:4 vg0/kernel-blk    8:0 sda (not dm)
//	dm-5  vg1/wwn-lv (by-id/wwn-0x600a0b8000aa0001)
//	dm-6  multipath mpatha (by-id/scsi-3600a0b80001234, /dev/mapper/mpatha)
//	dm-8  vg0-snapped-real, a snapshot origin's layer
//	dm-10 an LVM uuid with a name that is no valid LV name
//	dm-11 a partition of an LV (kpartx)
//	dm-12 sysfs unreadable
//	dm-13 vg0-lv_rimage_0, a raid image (LVM uuid with -real)
//	dm-14 dm-crypt luks-x
//	dm-15 an LVM uuid named "-x-y"
func testParser() *Parser {
	lvmUUID := func(lv string) string { return "LVM-" + testVGUUID + lv }
	sys := map[string]DMDevice{
		"/sys/block/dm-3":      {Name: "vg0-kernel--dm", UUID: lvmUUID("K3rnelDm000000000000000000000003")},
		"/sys/dev/block/253:4": {Name: "vg0-kernel--blk", UUID: lvmUUID("K3rnelBlk00000000000000000000004")},
		"/sys/block/dm-5":      {Name: "vg1-wwn--lv", UUID: "LVM-" + "Vg1uuid000000000000000000000000A" + "Wwn0000000000000000000000000005A"},
		"/sys/block/dm-6":      {Name: "mpatha", UUID: "mpath-3600a0b80001234"},
		"/sys/block/dm-8":      {Name: "vg0-snapped-real", UUID: lvmUUID("Snapped0000000000000000000000008") + "-real"},
		"/sys/block/dm-10":     {Name: "vg0-a b", UUID: lvmUUID("Bad00000000000000000000000000010")},
		"/sys/block/dm-11":     {Name: "vg0-part1", UUID: "part1-" + lvmUUID("Part0000000000000000000000000011")},
		"/sys/block/dm-13":     {Name: "vg0-lv_rimage_0", UUID: lvmUUID("Rimage00000000000000000000000013") + "-real"},
		"/sys/block/dm-14":     {Name: "luks-x", UUID: "CRYPT-LUKS2-0123456789abcdef-luks-x"},
		"/sys/block/dm-15":     {Name: "-x-y", UUID: lvmUUID("Dash0000000000000000000000000015")},
	}
	links := map[string]string{
		"/dev/disk/by-id/wwn-0x600a0b8000aa0001":        "/dev/dm-5",
		"/dev/disk/by-path/pci-0000:00:1f.2-ata-1":      "/dev/sda",
		"/dev/disk/by-id/scsi-3600a0b80001234":          "/dev/dm-6",
		"/dev/disk/by-id/dm-name-mpatha":                "/dev/dm-6",
		"/dev/disk/by-id/dm-uuid-mpath-3600a0b80001234": "/dev/dm-6",
		"/dev/mapper/mpatha":                            "/dev/dm-6",
		"/dev/mapper/vg0-snapped-real":                  "/dev/dm-8",
		"/dev/disk/by-id/dm-name-luks-x":                "/dev/dm-14",
		"/dev/sda":                                      "/dev/sda",
		"/dev/vg0/not-a-link":                           "/dev/vg0/not-a-link",
	}
	links["/dev/disk/by-id/dm-uuid-part1-LVM-"+testVGUUID+"Part0000000000000000000000000011"] = "/dev/dm-11"
	for dir := range sys {
		if dm, ok := strings.CutPrefix(dir, "/sys/block/"); ok {
			links["/dev/"+dm] = "/dev/" + dm
		}
	}
	return &Parser{
		PoolDir: poolDir,
		EvalSymlinks: func(p string) (string, error) {
			if t, ok := links[p]; ok {
				return t, nil
			}
			return "", &fs.PathError{Op: "lstat", Path: p, Err: fs.ErrNotExist}
		},
		ReadDM: func(dir string) (DMDevice, error) {
			switch dir {
			case "/sys/dev/block/8:0":
				return DMDevice{}, ErrNotDM
			case "/sys/block/dm-12":
				return DMDevice{}, &fs.PathError{Op: "read", Path: dir + "/dm/name", Err: syscall.EIO}
			}
			if d, ok := sys[dir]; ok {
				return d, nil
			}
			return DMDevice{}, &fs.PathError{Op: "stat", Path: dir, Err: fs.ErrNotExist}
		},
		LVByUUID: func(vg, lv string) (lvmlock.Ref, error) {
			switch {
			case vg == testVGUUID && lv == testLVUUID:
				return lvmlock.Ref{VG: "vg0", LV: "uuid-disk"}, nil
			case vg == testVGUUID && lv == testBadLVUUID:
				return lvmlock.Ref{VG: "vg0", LV: "-rf"}, nil
			}
			return lvmlock.Ref{}, fmt.Errorf("no LV with VG UUID %s and LV UUID %s", vg, lv)
		},
	}
}

// Device-mapper paths, file sources naming LVs, block copy destinations,
// qcow2 data files and the same through backing chains and pool volumes.
func TestParseDomainDeviceMapper(t *testing.T) {
	ex, sh := lvmlock.ModeEx, lvmlock.ModeSh
	tests := []struct {
		file string
		want *Domain
	}{
		{"dm-name.xml", &Domain{Name: "vm-dmname", UUID: "d1000000-0000-4000-8000-000000000001", Disks: []Disk{
			disk("vg0", "dmname-root", ex, "vda", "/dev/disk/by-id/dm-name-vg0-dmname--root"),
			disk("my-vg", "data", sh, "vdb", "/dev/disk/by-id/dm-name-my--vg-data"),
			// vdc: dm-name-mpatha, a multipath device: left alone
		}}},
		{"dm-uuid.xml", &Domain{Name: "vm-dmuuid", UUID: "d1000000-0000-4000-8000-000000000002", Disks: []Disk{
			disk("vg0", "uuid-disk", ex, "vda", "/dev/disk/by-id/dm-uuid-LVM-"+testVGUUID+testLVUUID),
		}}},
		{"dm-kernel.xml", &Domain{Name: "vm-dmkernel", UUID: "d1000000-0000-4000-8000-000000000003", Disks: []Disk{
			disk("vg0", "kernel-dm", ex, "vda", "/dev/dm-3"),
			disk("vg0", "kernel-blk", sh, "vdb", "/dev/block/253:4"),
			// vdc: 8:0 is not device-mapper; vdd: dm-6 is multipath
		}}},
		{"by-id-links.xml", &Domain{Name: "vm-links", UUID: "d1000000-0000-4000-8000-000000000004", Disks: []Disk{
			disk("vg1", "wwn-lv", ex, "vda", "/dev/disk/by-id/wwn-0x600a0b8000aa0001"),
			// vdb sda, vdc and vde multipath, vdd missing: left alone
		}}},
		{"file-lv.xml", &Domain{Name: "vm-filelv", UUID: "d1000000-0000-4000-8000-000000000005", Disks: []Disk{
			disk("vg0", "file-root", ex, "vda", "/dev/vg0/file-root"),
			disk("vg0", "file-data", sh, "vdb", "/dev/mapper/vg0-file--data"),
			disk("vg0", "kernel-dm", ex, "vdc", "/dev/dm-3"),
		}}},
		{"mirror.xml", &Domain{Name: "vm-mirror", UUID: "d1000000-0000-4000-8000-000000000006", Disks: []Disk{
			disk("vg0", "mirror-src", ex, "vda", "/dev/vg0/mirror-src"),
			disk("vg0", "mirror-dst", ex, "vda", "/dev/vg0/mirror-dst"),
			disk("vg0", "mirror-legacy", ex, "vdb", "/dev/mapper/vg0-mirror--legacy"),
			disk("vg0", "kernel-dm", ex, "vdc", "/dev/dm-3"),
			disk("vg0", "mirror-base", sh, "vdc", "/dev/vg0/mirror-base"),
			disk("vg0", "mirror-shared", sh, "vdd", "/dev/vg0/mirror-shared"),
			disk("vg0", "mirror-shared-dst", sh, "vdd", "/dev/vg0/mirror-shared-dst"),
		}}},
		{"datastore.xml", &Domain{Name: "vm-datastore", UUID: "d1000000-0000-4000-8000-000000000007", Disks: []Disk{
			disk("vg0", "ds-data", ex, "vda", "/dev/vg0/ds-data"),
			disk("vg0", "ds-base", sh, "vda", "/dev/mapper/vg0-ds--base"),
			disk("vg0", "ds-net", ex, "vdb", "/dev/disk/by-id/dm-name-vg0-ds--net"),
			disk("vg0", "ds-lvq", ex, "vdc", "/dev/vg0/ds-lvq"),
		}}},
		{"backing-dm.xml", &Domain{Name: "vm-backingdm", UUID: "d1000000-0000-4000-8000-000000000008", Disks: []Disk{
			disk("vg0", "bdm-overlay", ex, "vda", "/dev/vg0/bdm-overlay"),
			disk("vg0", "kernel-dm", sh, "vda", "/dev/dm-3"),
			disk("vg1", "golden-2", sh, "vda", "/dev/disk/by-id/dm-name-vg1-golden--2"),
			disk("vg0", "bdm-base", sh, "vda", "/dev/vg0/bdm-base"),
		}}},
		{"volume-dir.xml", &Domain{Name: "vm-voldir", UUID: "d1000000-0000-4000-8000-000000000009", Disks: []Disk{
			disk("vg0", "dirvol", ex, "vda", "/dev/vg0/dirvol"),
			disk("vg1", "wwn-lv", ex, "vdb", "/dev/disk/by-id/wwn-0x600a0b8000aa0001"),
			// vdc: a file of the images pool; vdd: multipath
		}}},
		// The forms lvhook read before, through the fakes: unchanged.
		{"mixed.xml", &Domain{Name: "vm-mixed", UUID: "a3d9e2f1-5b6c-4d7e-8f90-1a2b3c4d5e6f", Disks: []Disk{
			disk("vg0", "mixed-root", ex, "vda", "/dev/vg0/mixed-root"),
		}}},
		{"shared-backing.xml", &Domain{Name: "vm-shared", UUID: "c0ffee00-1111-4222-8333-444455556666", Disks: []Disk{
			disk("vg1", "overlay", ex, "vda", "/dev/vg1/overlay"),
			disk("vg1", "golden", sh, "vda", "/dev/vg1/golden"),
			disk("vg0", "cluster-fs", sh, "vdb", "/dev/vg0/cluster-fs"),
			disk("vg0", "reference", sh, "vdc", "/dev/vg0/reference"),
		}}},
	}
	p := testParser()
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := p.Parse(readDomain(t, tt.file))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Parse(%s) mismatch (-want +got):\n%s", tt.file, diff)
			}
		})
	}
}

func wrapDevices(devices string) string {
	return `<domain type='kvm'><name>bad</name><uuid>11111111-2222-3333-4444-555555555555</uuid><devices>` + devices + `</devices></domain>`
}

func blockDisk(dev string) string {
	return `<disk type='block' device='disk'><source dev='` + dev + `'/><target dev='vdb'/></disk>`
}

// refusals: disks that may be LVs lvhook cannot name. Each is refused with
// one line naming the disk and the path.
var refusals = []struct {
	name, devices string
	want          []string
}{
	{"dm-N missing", blockDisk("/dev/dm-9"),
		[]string{"disk vdb: /dev/dm-9 is a device-mapper device lvhook cannot map to an LV", "use /dev/VG/LV in the domain XML"}},
	{"dm-N unreadable", blockDisk("/dev/dm-12"),
		[]string{"disk vdb: /dev/dm-12 is a device-mapper device lvhook cannot map to an LV", "input/output error", "use /dev/VG/LV"}},
	{"block maj:min missing", blockDisk("/dev/block/253:99"),
		[]string{"disk vdb: /dev/block/253:99", "use /dev/VG/LV in the domain XML"}},
	{"block maj:min malformed", blockDisk("/dev/block/253:x"),
		[]string{"disk vdb: /dev/block/253:x", "use /dev/VG/LV in the domain XML"}},
	{"dm-N snapshot origin layer", blockDisk("/dev/mapper/vg0-snapped-real"),
		[]string{"disk vdb: /dev/mapper/vg0-snapped-real", "vg0-snapped-real", "internal", "use /dev/VG/LV"}},
	{"dm-N raid image", blockDisk("/dev/dm-13"),
		[]string{"disk vdb: /dev/dm-13", "vg0-lv_rimage_0", "internal", "use /dev/VG/LV"}},
	{"dm-N invalid LV name", blockDisk("/dev/dm-10"),
		[]string{"disk vdb: /dev/dm-10", "not a valid logical volume name", "use /dev/VG/LV"}},
	{"dm-N name starting with dash", blockDisk("/dev/dm-15"),
		[]string{"disk vdb: /dev/dm-15 is a device-mapper device lvhook cannot map to an LV", "use /dev/VG/LV"}},
	{"partition of an LV", blockDisk("/dev/disk/by-id/dm-uuid-part1-LVM-" + testVGUUID + "Part0000000000000000000000000011"),
		[]string{"disk vdb: /dev/disk/by-id/dm-uuid-part1-LVM-", "partition of an LV", "use /dev/VG/LV"}},
	{"dm-uuid layer", blockDisk("/dev/disk/by-id/dm-uuid-LVM-" + testVGUUID + testLVUUID + "-real"),
		[]string{"disk vdb: /dev/disk/by-id/dm-uuid-LVM-" + testVGUUID + testLVUUID + "-real", "internal", "use /dev/VG/LV"}},
	{"dm-uuid short", blockDisk("/dev/disk/by-id/dm-uuid-LVM-" + testVGUUID),
		[]string{"disk vdb: /dev/disk/by-id/dm-uuid-LVM-" + testVGUUID + " is a device-mapper device lvhook cannot map to an LV", "use /dev/VG/LV"}},
	{"dm-uuid odd characters", blockDisk("/dev/disk/by-id/dm-uuid-LVM-" + testVGUUID + "gT5uH7iK9lM1nO3pQ5rS7tU9vW1x!#zA"),
		[]string{"disk vdb: /dev/disk/by-id/dm-uuid-LVM-", "cannot map to an LV", "use /dev/VG/LV"}},
	{"dm-uuid unknown", blockDisk("/dev/disk/by-id/dm-uuid-LVM-" + testVGUUID + "Unknown000000000000000000000000X"),
		[]string{"disk vdb: /dev/disk/by-id/dm-uuid-LVM-", "no LV with VG UUID", "use /dev/VG/LV"}},
	{"dm-uuid bad name", blockDisk("/dev/disk/by-id/dm-uuid-LVM-" + testVGUUID + testBadLVUUID),
		[]string{"disk vdb: /dev/disk/by-id/dm-uuid-LVM-", `"-rf" is not a valid logical volume name`}},
	{"file dm-N missing", `<disk type='file' device='disk'><source file='/dev/dm-9'/><target dev='vdb'/></disk>`,
		[]string{"disk vdb: /dev/dm-9 is a device-mapper device lvhook cannot map to an LV"}},
	{"mirror dm-N missing", `<disk type='block'><source dev='/dev/vg0/x'/><mirror type='block' job='copy'><source dev='/dev/dm-9'/></mirror><target dev='vdb'/></disk>`,
		[]string{"disk vdb: /dev/dm-9 is a device-mapper device lvhook cannot map to an LV"}},
	{"legacy mirror dm-N missing", `<disk type='file'><source file='/var/lib/libvirt/images/a.img'/><mirror file='/dev/dm-9' format='raw' job='copy'/><target dev='vdb'/></disk>`,
		[]string{"disk vdb: /dev/dm-9 is a device-mapper device lvhook cannot map to an LV"}},
	{"mirror backing dm-N missing", `<disk type='block'><source dev='/dev/vg0/x'/><mirror type='file' job='copy'><source file='/var/lib/libvirt/images/c.qcow2'/><backingStore type='block'><source dev='/dev/dm-9'/></backingStore></mirror><target dev='vdb'/></disk>`,
		[]string{"disk vdb: /dev/dm-9 is a device-mapper device lvhook cannot map to an LV"}},
	{"dataStore dm-N missing", `<disk type='file'><source file='/var/lib/libvirt/images/a.qcow2'><dataStore type='block'><format type='raw'/><source dev='/dev/dm-9'/></dataStore></source><target dev='vdb'/></disk>`,
		[]string{"disk vdb: /dev/dm-9 is a device-mapper device lvhook cannot map to an LV"}},
	{"backing dm-N missing", `<disk type='block'><source dev='/dev/vg0/x'/><backingStore type='block'><source dev='/dev/block/253:99'/></backingStore><target dev='vdb'/></disk>`,
		[]string{"disk vdb: /dev/block/253:99"}},
	{"backing dataStore dm-N missing", `<disk type='file'><source file='/var/lib/libvirt/images/a.qcow2'/><backingStore type='file'><source file='/var/lib/libvirt/images/b.qcow2'><dataStore type='block'><source dev='/dev/dm-9'/></dataStore></source></backingStore><target dev='vdb'/></disk>`,
		[]string{"disk vdb: /dev/dm-9 is a device-mapper device lvhook cannot map to an LV"}},
	{"dir pool volume dm-N missing", `<disk type='volume'><source pool='devroot' volume='dm-9'/><target dev='vdb'/></disk>`,
		[]string{"disk vdb: /dev/dm-9 is a device-mapper device lvhook cannot map to an LV"}},
	{"dir pool volume escape", `<disk type='volume'><source pool='devvg' volume='../sda'/><target dev='vdb'/></disk>`,
		[]string{"disk vdb:", `"../sda" is not a file name`}},
	{"backing volume dir pool dm-N missing", `<disk type='block'><source dev='/dev/vg0/x'/><backingStore type='volume'><source pool='devroot' volume='dm-9'/></backingStore><target dev='vdb'/></disk>`,
		[]string{"disk vdb: /dev/dm-9 is a device-mapper device lvhook cannot map to an LV"}},
}

func TestParseDomainRefusesUnmappedDM(t *testing.T) {
	p := testParser()
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			d, err := p.Parse([]byte(wrapDevices(tt.devices)))
			if err == nil {
				t.Fatalf("Parse = %+v, want a refusal", d)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("error is not one line: %q", msg)
			}
			if !strings.HasPrefix(msg, "domain bad: ") {
				t.Errorf("error %q does not name the domain", msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
		})
	}
}

// Without a UUID lookup, a dm-uuid-LVM- path is refused; so it is by the
// Parse the hook calls today, which has none.
func TestParseDomainDMUUIDWithoutLookup(t *testing.T) {
	p := testParser()
	p.LVByUUID = nil
	_, err := p.Parse(readDomain(t, "dm-uuid.xml"))
	want := "domain vm-dmuuid: disk vda: /dev/disk/by-id/dm-uuid-LVM-" + testVGUUID + testLVUUID + " names an LV by its UUID"
	if err == nil || !strings.HasPrefix(err.Error(), want) || !strings.HasSuffix(err.Error(), "use /dev/VG/LV in the domain XML") {
		t.Errorf("Parse error = %v, want %q ... use /dev/VG/LV in the domain XML", err, want)
	}
	if _, err := Parse(readDomain(t, "dm-uuid.xml"), poolDir); err == nil || !strings.Contains(err.Error(), "names an LV by its UUID") {
		t.Errorf("Parse (default) error = %v, want the UUID refusal", err)
	}
}

// Parse, as the hook calls it, reads the real sysfs: a dm-N this
// machine does not have is refused.
func TestParseDomainDefaultSysfs(t *testing.T) {
	_, err := Parse([]byte(wrapDevices(blockDisk("/dev/dm-999999"))), poolDir)
	if err == nil || !strings.Contains(err.Error(), "/dev/dm-999999 is a device-mapper device lvhook cannot map to an LV") {
		t.Errorf("Parse error = %v, want the refusal of /dev/dm-999999", err)
	}
}

func TestReadSysDM(t *testing.T) {
	root := t.TempDir()
	write := func(rel, data string) {
		t.Helper()
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("dm-3/dm/name", "vg0-kernel--dm\n")
	write("dm-3/dm/uuid", "LVM-"+testVGUUID+testLVUUID+"\n")
	write("sda/size", "2048\n")

	got, err := ReadSysDM(filepath.Join(root, "dm-3"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(DMDevice{Name: "vg0-kernel--dm", UUID: "LVM-" + testVGUUID + testLVUUID}, got); diff != "" {
		t.Errorf("ReadSysDM(dm-3) (-want +got):\n%s", diff)
	}
	if _, err := ReadSysDM(filepath.Join(root, "sda")); !errors.Is(err, ErrNotDM) {
		t.Errorf("ReadSysDM(sda) = %v, want ErrNotDM", err)
	}
	if _, err := ReadSysDM(filepath.Join(root, "dm-9")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadSysDM(dm-9) = %v, want fs.ErrNotExist", err)
	}
}
