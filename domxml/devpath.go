package domxml

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode"

	"github.com/lvhook/lvhook/lvmlock"
)

// pathLV maps a source path to an LV: by name for /dev/VG/LV,
// /dev/mapper/VG-LV and /dev/disk/by-id/dm-name-VG-LV (the LV need not be
// active), by UUID for /dev/disk/by-id/dm-uuid-LVM-..., through sysfs for
// /dev/dm-N, /dev/block/MAJ:MIN and any link under /dev to a dm device. It
// returns nil for a path that is not device-mapper, and an error for a
// device-mapper device it cannot map to an LV.
func (p *Parser) pathLV(path string) (*lvmlock.Ref, error) {
	ref, err := ParseDevPath(path)
	if ref != nil || err != nil || !strings.HasPrefix(path, "/dev/") {
		return ref, err
	}
	if ids, ok := strings.CutPrefix(path, "/dev/disk/by-id/dm-uuid-LVM-"); ok {
		return p.uuidLV(path, ids)
	}
	if sys, ok, err := kernelDevice(path); ok || err != nil {
		if err != nil {
			return nil, err
		}
		return p.dmLV(path, sys)
	}
	// A link (by-id, by-path, by-uuid, /dev/mapper/NAME under udev) to a
	// dm device is that device. A missing path is left alone as before:
	// libvirt and QEMU cannot open it either.
	real, err := p.evalSymlinks(path)
	if err != nil || real == path {
		return nil, nil
	}
	if sys, ok, _ := kernelDevice(real); ok {
		return p.dmLV(path, sys)
	}
	if ref, err := ParseDevPath(real); err == nil && ref != nil {
		return ref, nil // a static /dev/VG/LV node (no udev)
	}
	return nil, nil
}

// kernelDevice maps /dev/dm-N and /dev/block/MAJ:MIN to the device's sysfs
// directory. ok is false for other paths; a malformed /dev/block path is
// an error.
func kernelDevice(path string) (sysDir string, ok bool, err error) {
	if n, found := strings.CutPrefix(path, "/dev/dm-"); found && digits(n) {
		return "/sys/block/dm-" + n, true, nil
	}
	if mm, found := strings.CutPrefix(path, "/dev/block/"); found {
		maj, minor, _ := strings.Cut(mm, ":")
		if !digits(maj) || !digits(minor) {
			return "", false, fmt.Errorf("%s is not a device number path (/dev/block/MAJ:MIN), so lvhook cannot tell whether it is an LV; use /dev/VG/LV in the domain XML", show(path))
		}
		return "/sys/dev/block/" + mm, true, nil
	}
	return "", false, nil
}

func digits(s string) bool {
	if s == "" || len(s) > 10 {
		return false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// dmLV maps the block device of sysfs directory sys, named path in the XML.
func (p *Parser) dmLV(path, sys string) (*lvmlock.Ref, error) {
	dev, err := p.readDM(sys)
	switch {
	case errors.Is(err, ErrNotDM):
		return nil, nil // sda, nvme0n1, md0...: not device-mapper
	case errors.Is(err, fs.ErrNotExist) && strings.HasPrefix(sys, "/sys/dev/block/"):
		return nil, fmt.Errorf("%s is no device on this host, so lvhook cannot tell whether it is an LV; use /dev/VG/LV in the domain XML", show(path))
	case errors.Is(err, fs.ErrNotExist):
		return nil, unmapped(path, "no such device on this host")
	case err != nil:
		return nil, unmapped(path, err.Error())
	}
	return dmDeviceLV(path, dev)
}

// dmDeviceLV maps a device-mapper device to its LV. lvm names every LV's
// device VG-LV with the UUID LVM-<VG UUID><LV UUID>; internal layers
// (snapshot origins' -real, thin pools' -tpool, raid images...) carry a
// suffix after the UUIDs, and kpartx partitions a partN- prefix.
func dmDeviceLV(path string, dev DMDevice) (*lvmlock.Ref, error) {
	rest, isLVM := strings.CutPrefix(dev.UUID, "LVM-")
	if !isLVM {
		if part, _, ok := strings.Cut(dev.UUID, "-LVM-"); ok && strings.HasPrefix(part, "part") {
			return nil, fmt.Errorf("%s is %q, a partition of an LV; lvhook locks whole LVs: use /dev/VG/LV in the domain XML", show(path), dev.Name)
		}
		return nil, nil // multipath, dm-crypt...: not an LV
	}
	ids, layer, _ := strings.Cut(rest, "-")
	if layer != "" {
		return nil, internalLayer(path, dev.Name, layer)
	}
	if !lvmUUIDs(ids) {
		return nil, unmapped(path, fmt.Sprintf("device-mapper UUID %q", dev.UUID))
	}
	vg, lv, ok := splitDMName(dev.Name)
	if !ok {
		return nil, unmapped(path, fmt.Sprintf("device-mapper name %q is not VG-LV", dev.Name))
	}
	ref := &lvmlock.Ref{VG: vg, LV: lv}
	if err := checkNames(*ref); err != nil {
		return nil, unmapped(path, err.Error())
	}
	return ref, nil
}

// uuidLV maps /dev/disk/by-id/dm-uuid-LVM-<ids>: through sysfs when the LV
// is active here (the link exists), else through LVByUUID.
func (p *Parser) uuidLV(path, ids string) (*lvmlock.Ref, error) {
	ids, layer, _ := strings.Cut(ids, "-")
	if layer != "" {
		return nil, internalLayer(path, "", layer)
	}
	if !lvmUUIDs(ids) {
		return nil, unmapped(path, "not lvm's VG and LV UUIDs")
	}
	if real, err := p.evalSymlinks(path); err == nil {
		if sys, ok, _ := kernelDevice(real); ok {
			if dev, err := p.readDM(sys); err == nil && dev.UUID == "LVM-"+ids {
				return dmDeviceLV(path, dev)
			}
		}
	}
	if p.LVByUUID == nil {
		return nil, fmt.Errorf("%s names an LV by its UUID and the LV is not active here; lvhook cannot map a UUID to a name without lvm: use /dev/VG/LV in the domain XML", show(path))
	}
	ref, err := p.LVByUUID(ids[:32], ids[32:])
	if err != nil {
		return nil, fmt.Errorf("%s: %v; use /dev/VG/LV in the domain XML", show(path), err)
	}
	if err := checkNames(ref); err != nil {
		return nil, fmt.Errorf("%s: lvm names %w", show(path), err)
	}
	return &ref, nil
}

// lvmUUIDs reports whether s is a VG UUID and an LV UUID as lvm writes them
// in device-mapper UUIDs: 32 + 32 letters and digits.
func lvmUUIDs(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func unmapped(path, why string) error {
	return fmt.Errorf("%s is a device-mapper device lvhook cannot map to an LV (%s); use /dev/VG/LV in the domain XML", show(path), why)
}

func internalLayer(path, name, layer string) error {
	what := "an internal device-mapper layer of an LV"
	if name != "" {
		what = fmt.Sprintf("%q, %s", name, what)
	}
	return fmt.Errorf("%s is %s (UUID suffix %q), not an LV lvhook can lock; use /dev/VG/LV in the domain XML", show(path), what, "-"+layer)
}

// show returns s as is when it is printable and unquoted, else quoted, so
// that a string from the XML cannot break the one-line error libvirt shows.
func show(s string) string {
	for _, r := range s {
		if !unicode.IsPrint(r) || r == ' ' || r == '"' {
			return strconv.Quote(s)
		}
	}
	if s == "" {
		return `""`
	}
	return s
}

func (p *Parser) evalSymlinks(path string) (string, error) {
	if p.EvalSymlinks != nil {
		return p.EvalSymlinks(path)
	}
	return filepath.EvalSymlinks(path)
}

func (p *Parser) readDM(sys string) (DMDevice, error) {
	if p.ReadDM != nil {
		return p.ReadDM(sys)
	}
	return ReadSysDM(sys)
}

// DMDevice is what sysfs says of a device-mapper device.
type DMDevice struct {
	Name, UUID string
}

// ErrNotDM: the block device exists and is not a device-mapper device.
var ErrNotDM = errors.New("not a device-mapper device")

// ReadSysDM reads dm/name and dm/uuid under a block device's sysfs
// directory. It returns an fs.ErrNotExist error when there is no such
// device and ErrNotDM when the device is not device-mapper.
func ReadSysDM(sysDir string) (DMDevice, error) {
	if _, err := os.Stat(sysDir); err != nil {
		return DMDevice{}, err
	}
	name, err := os.ReadFile(filepath.Join(sysDir, "dm", "name"))
	if errors.Is(err, fs.ErrNotExist) {
		return DMDevice{}, fmt.Errorf("%s: %w", sysDir, ErrNotDM)
	}
	if err != nil {
		return DMDevice{}, err
	}
	uuid, err := os.ReadFile(filepath.Join(sysDir, "dm", "uuid"))
	if err != nil {
		return DMDevice{}, err
	}
	return DMDevice{Name: strings.TrimSuffix(string(name), "\n"), UUID: strings.TrimSuffix(string(uuid), "\n")}, nil
}

// Directories of /dev that hold devices other than LVs: a two-level path
// under them is never /dev/VG/LV.
var notVGDirs = map[string]bool{
	"disk": true, "md": true, "zvol": true, "drbd": true, "bcache": true, "block": true,
	"char": true, "bus": true, "vfio": true, "cciss": true, "nvme-fabrics": true, "rbd": true,
	"sg": true, "sr": true, "loop": true, "nbd": true, "input": true, "dri": true, "snd": true,
	"net": true, "pts": true, "shm": true, "hugepages": true, "mqueue": true, "cpu": true,
}

// ParseDevPath maps /dev/VG/LV, /dev/mapper/VG-LV and
// /dev/disk/by-id/dm-name-VG-LV (with "-" in names doubled) to an LV, from
// the path alone: at a start the LV is not active yet. Other paths return
// nil; Parser reads sysfs for the device-mapper ones.
func ParseDevPath(path string) (*lvmlock.Ref, error) {
	if !strings.HasPrefix(path, "/dev/") {
		return nil, nil
	}
	clean := filepath.Clean(path)
	if clean != path {
		return nil, fmt.Errorf("source %q is not a clean path (write %s)", path, clean)
	}
	if name, ok := strings.CutPrefix(path, "/dev/disk/by-id/dm-name-"); ok {
		return dmNameLV(name)
	}
	parts := strings.Split(strings.TrimPrefix(path, "/dev/"), "/")
	if len(parts) != 2 {
		return nil, nil
	}
	if parts[0] == "mapper" {
		return dmNameLV(parts[1])
	}
	if notVGDirs[parts[0]] {
		return nil, nil
	}
	ref := &lvmlock.Ref{VG: parts[0], LV: parts[1]}
	if checkNames(*ref) != nil {
		return nil, nil // not an LVM name, so not an LV
	}
	return ref, nil
}

// dmNameLV maps a device-mapper name VG-LV to its LV; nil for a name that
// is no LV's (multipath, crypt, an LV's internal layer).
func dmNameLV(name string) (*lvmlock.Ref, error) {
	vg, lv, ok := splitDMName(name)
	if !ok {
		return nil, nil
	}
	ref := &lvmlock.Ref{VG: vg, LV: lv}
	return ref, checkNames(*ref)
}

// splitDMName splits a device-mapper name "VG-LV", where lvm doubles every
// "-" inside VG and LV names, at its single "-". A name with a second single
// "-" is a layer device (vg-lv-real, vg-pool-tpool), not an LV.
func splitDMName(name string) (vg, lv string, ok bool) {
	sep := -1
	for i := 0; i < len(name); i++ {
		switch {
		case name[i] != '-':
		case i+1 < len(name) && name[i+1] == '-':
			i++
		case sep >= 0:
			return "", "", false
		default:
			sep = i
		}
	}
	if sep <= 0 || sep == len(name)-1 {
		return "", "", false
	}
	return strings.ReplaceAll(name[:sep], "--", "-"), strings.ReplaceAll(name[sep+1:], "--", "-"), true
}

// checkNames applies lvm's rules for VG and LV names (lvm(8), VALID NAMES),
// the same rule lvmlock applies to every name it puts on a command line.
func checkNames(r lvmlock.Ref) error { return lvmlock.ValidRef(r) }
