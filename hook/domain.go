package hook

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/lvhook/lvhook/lvmlock"
)

// MetadataNS is the XML namespace of lvhook's element in a domain's
// <metadata>. A domain opts out of lvhook with
//
//	<metadata>
//	  <lvhook:domain xmlns:lvhook="https://lvhook.dev/xmlns/domain/1" manage="no"/>
//	</metadata>
//
// or, on a defined domain: virsh metadata DOM https://lvhook.dev/xmlns/domain/1
// --key lvhook --set '<domain manage="no"/>'.
const MetadataNS = "https://lvhook.dev/xmlns/domain/1"

// MaxXMLSize bounds the domain XML read from stdin.
const MaxXMLSize = 16 << 20

// Disk is one LV a domain uses, with the mode it needs.
type Disk struct {
	lvmlock.Ref
	Mode lvmlock.Mode
	// Target is the guest device (vda) and Path the source as written.
	Target, Path string
}

// Domain is what lvhook needs of a domain XML.
type Domain struct {
	Name, UUID string
	// OptedOut is set by manage="no" in lvhook's metadata element.
	OptedOut bool
	// Disks are the LV candidates, one per LV, in document order.
	Disks []Disk
}

type domainXML struct {
	XMLName  xml.Name `xml:"domain"`
	Name     string   `xml:"name"`
	UUID     string   `xml:"uuid"`
	Metadata struct {
		LVHook *struct {
			Manage string `xml:"manage,attr"`
		} `xml:"https://lvhook.dev/xmlns/domain/1 domain"`
	} `xml:"metadata"`
	Disks []diskXML `xml:"devices>disk"`
}

type diskXML struct {
	Type         string     `xml:"type,attr"`
	Device       string     `xml:"device,attr"`
	Source       *sourceXML `xml:"source"`
	BackingStore *diskXML   `xml:"backingStore"`
	Shareable    *struct{}  `xml:"shareable"`
	ReadOnly     *struct{}  `xml:"readonly"`
	Target       struct {
		Dev string `xml:"dev,attr"`
	} `xml:"target"`
}

type sourceXML struct {
	Dev    string `xml:"dev,attr"`
	Pool   string `xml:"pool,attr"`
	Volume string `xml:"volume,attr"`
}

// ReadXML reads at most MaxXMLSize bytes of domain XML.
func ReadXML(r io.Reader) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxXMLSize+1))
	if err != nil {
		return nil, fmt.Errorf("read domain XML from stdin: %w", err)
	}
	if len(data) > MaxXMLSize {
		return nil, fmt.Errorf("domain XML on stdin is larger than %d MiB", MaxXMLSize>>20)
	}
	return data, nil
}

// ParseDomain finds the LVs of a domain XML. poolDir holds libvirt's storage
// pool definitions (POOL.xml), read for type='volume' disks.
func ParseDomain(data []byte, poolDir string) (*Domain, error) {
	var x domainXML
	dec := xml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&x); err != nil {
		return nil, fmt.Errorf("malformed domain XML: %w", err)
	}
	if x.Name == "" || x.UUID == "" {
		return nil, errors.New("malformed domain XML: no <name> or <uuid>")
	}
	d := &Domain{Name: x.Name, UUID: strings.ToLower(strings.TrimSpace(x.UUID))}
	if m := x.Metadata.LVHook; m != nil {
		switch strings.ToLower(m.Manage) {
		case "no", "false", "off", "0":
			d.OptedOut = true
		case "", "yes", "true", "on", "1":
		default:
			return nil, fmt.Errorf("domain %s: lvhook metadata: manage=%q is not yes or no", d.Name, m.Manage)
		}
	}
	seen := map[lvmlock.Ref]int{}
	for i := range x.Disks {
		disk := &x.Disks[i]
		shared := disk.Shareable != nil || disk.ReadOnly != nil
		// The disk itself, then its backing chain; backing images are only
		// read by QEMU, so they are shared.
		for layer, depth := disk, 0; layer != nil; layer, depth = layer.BackingStore, depth+1 {
			if depth > 64 {
				return nil, fmt.Errorf("domain %s: disk %s: backing chain deeper than 64", d.Name, disk.Target.Dev)
			}
			ref, path, err := layer.lv(poolDir)
			if err != nil {
				return nil, fmt.Errorf("domain %s: disk %s: %w", d.Name, disk.Target.Dev, err)
			}
			if ref == nil {
				continue
			}
			mode := lvmlock.ModeEx
			if shared || depth > 0 {
				mode = lvmlock.ModeSh
			}
			if j, dup := seen[*ref]; dup {
				// The same LV twice: the stronger mode protects both uses.
				if mode == lvmlock.ModeEx {
					d.Disks[j].Mode = lvmlock.ModeEx
				}
				continue
			}
			seen[*ref] = len(d.Disks)
			d.Disks = append(d.Disks, Disk{Ref: *ref, Mode: mode, Target: disk.Target.Dev, Path: path})
		}
	}
	return d, nil
}

// lv returns the LV a disk layer names, or nil for a non-LVM source.
func (x *diskXML) lv(poolDir string) (*lvmlock.Ref, string, error) {
	if x.Source == nil {
		return nil, "", nil // empty CD-ROM, or a source lvhook does not read
	}
	switch x.Type {
	case "block":
		ref, err := ParseDevPath(x.Source.Dev)
		return ref, x.Source.Dev, err
	case "volume":
		if x.Source.Pool == "" || x.Source.Volume == "" {
			return nil, "", nil
		}
		vg, err := logicalPoolVG(poolDir, x.Source.Pool)
		if err != nil || vg == "" {
			return nil, "", err
		}
		ref := &lvmlock.Ref{VG: vg, LV: x.Source.Volume}
		if err := checkNames(*ref); err != nil {
			return nil, "", err
		}
		return ref, "pool " + x.Source.Pool + " volume " + x.Source.Volume, nil
	}
	return nil, "", nil // file, network, nvme, vhostuser...
}

// Directories of /dev that hold devices other than LVs: a two-level path
// under them is never /dev/VG/LV.
var notVGDirs = map[string]bool{
	"disk": true, "md": true, "zvol": true, "drbd": true, "bcache": true, "block": true,
	"char": true, "bus": true, "vfio": true, "cciss": true, "nvme-fabrics": true, "rbd": true,
	"sg": true, "sr": true, "loop": true, "nbd": true, "input": true, "dri": true, "snd": true,
	"net": true, "pts": true, "shm": true, "hugepages": true, "mqueue": true, "cpu": true,
}

// ParseDevPath maps /dev/VG/LV and /dev/mapper/VG-LV (with "-" in names
// doubled) to an LV. Other paths return nil: they are not LVM paths lvhook
// can name without asking the device-mapper, which may not have the LV yet.
func ParseDevPath(path string) (*lvmlock.Ref, error) {
	if !strings.HasPrefix(path, "/dev/") {
		return nil, nil
	}
	clean := filepath.Clean(path)
	if clean != path {
		return nil, fmt.Errorf("source %q is not a clean path (write %s)", path, clean)
	}
	parts := strings.Split(strings.TrimPrefix(path, "/dev/"), "/")
	if len(parts) != 2 {
		return nil, nil
	}
	if parts[0] == "mapper" {
		vg, lv, ok := splitDMName(parts[1])
		if !ok {
			return nil, nil // a dm device that is not an LV (crypt, multipath)
		}
		ref := &lvmlock.Ref{VG: vg, LV: lv}
		return ref, checkNames(*ref)
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

type poolXML struct {
	Type   string `xml:"type,attr"`
	Name   string `xml:"name"`
	Source struct {
		Name string `xml:"name"`
	} `xml:"source"`
}

// logicalPoolVG reads POOL.xml and returns the VG of a logical pool, or "" for
// another pool type. A pool lvhook cannot read is an error: the disk may be an
// LV, and starting without its lock would be unsafe.
func logicalPoolVG(dir, pool string) (string, error) {
	if strings.ContainsAny(pool, "/\x00") || pool == "." || pool == ".." {
		return "", fmt.Errorf("storage pool name %q is not a file name", pool)
	}
	path := filepath.Join(dir, pool+".xml")
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("storage pool %s: %w (lvhook reads pool definitions from %s)", pool, err, dir)
	}
	var p poolXML
	if err := xml.Unmarshal(data, &p); err != nil {
		return "", fmt.Errorf("storage pool %s: malformed %s: %w", pool, path, err)
	}
	if p.Type != "logical" {
		return "", nil
	}
	if p.Source.Name != "" {
		return p.Source.Name, nil
	}
	return p.Name, nil // libvirt's default: the VG is named like the pool
}
