package domxml

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
// --key lvhook --set '<domain manage="no"/>'. The same element carries what
// `lvhook evacuate` reads (evacuation.go): priority="N" and fallback="...".
const MetadataNS = "https://lvhook.dev/xmlns/domain/1"

// MaxSize bounds the domain XML read from stdin.
const MaxSize = 16 << 20

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
	// Evacuate holds the evacuation attributes of that element as written;
	// only `lvhook evacuate` reads them (Evacuation), the hook never does.
	Evacuate EvacuateAttrs
	// Disks are the LV candidates, one per LV, in document order.
	Disks []Disk
}

// Refs lists the LVs of d's disks, in document order.
func (d *Domain) Refs() []lvmlock.Ref {
	refs := make([]lvmlock.Ref, len(d.Disks))
	for i, disk := range d.Disks {
		refs[i] = disk.Ref
	}
	return refs
}

type domainXML struct {
	XMLName  xml.Name `xml:"domain"`
	Name     string   `xml:"name"`
	UUID     string   `xml:"uuid"`
	Metadata struct {
		LVHook *struct {
			Manage   string  `xml:"manage,attr"`
			Priority *string `xml:"priority,attr"`
			Fallback *string `xml:"fallback,attr"`
		} `xml:"https://lvhook.dev/xmlns/domain/1 domain"`
	} `xml:"metadata"`
	Disks []diskXML `xml:"devices>disk"`
}

// storageXML is one image: a disk's own source, a <backingStore> layer, a
// <mirror> (block copy destination) or a <dataStore> (qcow2 data file).
type storageXML struct {
	Type         string      `xml:"type,attr"`
	Source       *sourceXML  `xml:"source"`
	BackingStore *storageXML `xml:"backingStore"`
}

type diskXML struct {
	storageXML
	Device    string     `xml:"device,attr"`
	Mirror    *mirrorXML `xml:"mirror"`
	Shareable *struct{}  `xml:"shareable"`
	ReadOnly  *struct{}  `xml:"readonly"`
	Target    struct {
		Dev string `xml:"dev,attr"`
	} `xml:"target"`
}

// mirrorXML is a block job's destination. Without a type attribute libvirt
// reads the destination from the file attribute alone (its older format).
type mirrorXML struct {
	storageXML
	File string `xml:"file,attr"`
}

type sourceXML struct {
	Dev    string `xml:"dev,attr"`
	File   string `xml:"file,attr"`
	Pool   string `xml:"pool,attr"`
	Volume string `xml:"volume,attr"`
	// DataStore is a qcow2 image's external data file, written with it.
	DataStore *storageXML `xml:"dataStore"`
}

// Read reads at most MaxSize bytes of domain XML.
func Read(r io.Reader) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("read domain XML from stdin: %w", err)
	}
	if len(data) > MaxSize {
		return nil, fmt.Errorf("domain XML on stdin is larger than %d MiB", MaxSize>>20)
	}
	return data, nil
}

// Parser finds the LVs of domain XMLs. A disk may name an LV through a path
// that is only a device-mapper device (/dev/dm-N, /dev/block/MAJ:MIN, a
// /dev/disk/by-* link): the parser asks sysfs which device that is, and
// refuses the disk when it cannot tell, rather than leave an LV unlocked.
// Nil functions use this host's /dev and /sys; lvhook never asks libvirtd.
type Parser struct {
	// PoolDir holds libvirt's storage pool definitions (POOL.xml), read for
	// type='volume' disks.
	PoolDir string
	// EvalSymlinks resolves a path under /dev to the device node it names
	// (filepath.EvalSymlinks when nil). Paths outside /dev are never read:
	// a hung network file system must not hang the hook.
	EvalSymlinks func(path string) (string, error)
	// ReadDM reads the device-mapper name and UUID of the block device
	// whose sysfs directory is sysDir (/sys/block/dm-N or
	// /sys/dev/block/MAJ:MIN); ReadSysDM when nil.
	ReadDM func(sysDir string) (DMDevice, error)
	// LVByUUID names the LV with lvm's VG and LV UUIDs (32 characters each,
	// without dashes, as in /dev/disk/by-id/dm-uuid-LVM-VGUUIDLVUUID). Nil:
	// such a disk is refused unless its LV is active here (then sysfs names
	// it).
	LVByUUID func(vgUUID, lvUUID string) (lvmlock.Ref, error)
}

// Parse finds the LVs of a domain XML with this host's /dev and sysfs
// and no UUID lookup. poolDir holds libvirt's storage pool definitions.
func Parse(data []byte, poolDir string) (*Domain, error) {
	return (&Parser{PoolDir: poolDir}).Parse(data)
}

// Parse finds the LVs of a domain XML: every disk's source, backing
// chain, qcow2 data files and block copy destination. A source that may be
// an LV lvhook cannot name is an error of one line naming the disk.
func (p *Parser) Parse(data []byte) (*Domain, error) {
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
			return nil, fmt.Errorf("domain %s: lvhook metadata: manage=%q is not yes or no", show(d.Name), m.Manage)
		}
		d.Evacuate = EvacuateAttrs{Priority: m.Priority, Fallback: m.Fallback}
	}
	seen := map[lvmlock.Ref]int{}
	for i := range x.Disks {
		disk := &x.Disks[i]
		fail := func(err error) (*Domain, error) {
			return nil, fmt.Errorf("domain %s: disk %s: %w", show(d.Name), show(disk.Target.Dev), err)
		}
		top := lvmlock.ModeEx
		if disk.Shareable != nil || disk.ReadOnly != nil {
			top = lvmlock.ModeSh
		}
		// The disk's chain, then its block copy destination's, which QEMU
		// writes as it writes the disk.
		chains := []*storageXML{&disk.storageXML}
		if m := disk.Mirror; m != nil {
			if m.Type == "" {
				m.storageXML = storageXML{Type: "file", Source: &sourceXML{File: m.File}}
			}
			chains = append(chains, &m.storageXML)
		}
		for _, chain := range chains {
			// Backing images are only read by QEMU, so they are shared; a
			// data file is written as its image is.
			for layer, depth := chain, 0; layer != nil; layer, depth = layer.BackingStore, depth+1 {
				if depth > 64 {
					return fail(errors.New("backing chain deeper than 64"))
				}
				mode := top
				if depth > 0 {
					mode = lvmlock.ModeSh
				}
				images := []*storageXML{layer}
				if layer.Source != nil && layer.Source.DataStore != nil {
					images = append(images, layer.Source.DataStore)
				}
				for _, img := range images {
					ref, path, err := p.lv(img)
					if err == nil && ref != nil {
						err = checkNames(*ref) // whatever found it, nothing else reaches lvm
					}
					if err != nil {
						return fail(err)
					}
					if ref == nil {
						continue
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
		}
	}
	return d, nil
}

// lv returns the LV an image names, or nil for a non-LVM source.
func (p *Parser) lv(x *storageXML) (*lvmlock.Ref, string, error) {
	if x.Source == nil {
		return nil, "", nil // empty CD-ROM, or a source lvhook does not read
	}
	switch x.Type {
	case "block":
		ref, err := p.pathLV(x.Source.Dev)
		return ref, x.Source.Dev, err
	case "file", "": // libvirt's default type is file
		ref, err := p.pathLV(x.Source.File)
		return ref, x.Source.File, err
	case "volume":
		return p.volumeLV(x.Source.Pool, x.Source.Volume)
	}
	return nil, "", nil // network, nvme, vhostuser, dir...
}

// volumeLV maps a storage pool volume: an LV of a logical pool, or the file
// of a directory pool, which is an LV when the directory is /dev/VG.
func (p *Parser) volumeLV(pool, volume string) (*lvmlock.Ref, string, error) {
	if pool == "" || volume == "" {
		return nil, "", nil
	}
	def, err := readPool(p.PoolDir, pool)
	if err != nil {
		return nil, "", err
	}
	switch def.Type {
	case "logical":
		vg := def.Source.Name
		if vg == "" {
			vg = def.Name // libvirt's default: the VG is named like the pool
		}
		ref := &lvmlock.Ref{VG: vg, LV: volume}
		if err := checkNames(*ref); err != nil {
			return nil, "", err
		}
		return ref, "pool " + pool + " volume " + volume, nil
	case "dir", "fs", "netfs":
		// The volume is the file named like it in the pool's directory.
		if strings.ContainsAny(volume, "/\x00") || volume == "." || volume == ".." {
			return nil, "", fmt.Errorf("storage pool %s: volume name %q is not a file name", pool, volume)
		}
		if !filepath.IsAbs(def.Target.Path) {
			return nil, "", nil
		}
		path := filepath.Join(def.Target.Path, volume)
		ref, err := p.pathLV(path)
		return ref, path, err
	}
	return nil, "", nil // disk, iscsi, mpath, rbd...: not LVs
}

type poolXML struct {
	Type   string `xml:"type,attr"`
	Name   string `xml:"name"`
	Source struct {
		Name string `xml:"name"`
	} `xml:"source"`
	Target struct {
		Path string `xml:"path"`
	} `xml:"target"`
}

// readPool reads POOL.xml. A pool lvhook cannot read is an error: its
// volumes may be LVs, and starting without their locks would be unsafe.
func readPool(dir, pool string) (*poolXML, error) {
	if strings.ContainsAny(pool, "/\x00") || pool == "." || pool == ".." {
		return nil, fmt.Errorf("storage pool name %q is not a file name", pool)
	}
	path := filepath.Join(dir, pool+".xml")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("storage pool %s: %w (lvhook reads pool definitions from %s)", pool, err, dir)
	}
	var p poolXML
	if err := xml.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("storage pool %s: malformed %s: %w", pool, path, err)
	}
	return &p, nil
}
