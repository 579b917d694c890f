package lvmfake

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/lvhook/lvhook/lvmlock"
)

// The lease storage lost, and what `lvhook kill-vg` sees of it: each host's
// device-mapper devices (dmsetup info, table, wipe_table, remove), lvmlockd's
// kill_vg flag (lvmlockctl --info --dump) and the lockspace's start
// (vgchange --lock-start). An LV's device exists on a host while the host
// holds the LV (Holders) or, after Drop, without a lock (Stale); every VG
// whose lockspace ran has its lvmlock LV's device. Formats are dmsetup's and
// lvmlockd's own (libdm/dm-tools/dmsetup.c, lvmlockd-core.c print_lockspace).

// LoseStorage: host can no longer reach vg's lease storage. New locks fail
// as sanlock's do; a deactivation leaves the lease on the storage (a Ghost).
func (c *Cluster) LoseStorage(host int, vg string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	set(c.Lost, host, vg, true)
}

// RestoreStorage: host reaches vg's lease storage again.
func (c *Cluster) RestoreStorage(host int, vg string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	set(c.Lost, host, vg, false)
}

// Kill is lvmlockctl --kill's kill_vg: lvmlockd on host refuses every new
// lock of vg (EVGKILLED) and its info dump shows kill_vg=1.
func (c *Cluster) Kill(host int, vg string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	set(c.Killed, host, vg, true)
}

// Drop is lvmlockctl --drop (drop_vg, after a kill command exited 0):
// lvmlockd on host forgets vg's locks and lockspace. The LVs' devices stay
// (Stale), and their leases stay on the storage, refusing other hosts, until
// Expire.
func (c *Cluster) Drop(host int, vg string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v := c.VGs[vg]
	if v == nil {
		return
	}
	for _, lv := range v.LVs {
		if m := lv.Holders[host]; m != lvmlock.ModeNone {
			lv.Ghosts[host] = m
			lv.Stale[host] = true
			delete(lv.Holders, host)
		}
	}
	set(c.Killed, host, vg, false)
	set(c.Started, host, vg, false)
	set(c.Dropped, host, vg, true)
}

// Expire: the other hosts' sanlock sees host's lease of vg dead (140 s after
// its last renewal): its leases may be taken.
func (c *Cluster) Expire(host int, vg string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v := c.VGs[vg]; v != nil {
		for _, lv := range v.LVs {
			delete(lv.Ghosts, host)
		}
	}
}

// AddLayer gives vg/lv's device on every host where it is active a layer
// device (VG-LV-layer, e.g. a thin pool's tpool), held open by the LV's own
// device until that one is wiped.
func (c *Cluster) AddLayer(vg, lv, layer string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := lvmlock.Ref{VG: vg, LV: lv}
	c.Layers[r] = append(c.Layers[r], layer)
}

// Writable tells whether vg/lv has a device on host whose table is not the
// error target.
func (c *Cluster) Writable(host int, vg, lv string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range c.devices(host) {
		if d.ref == (lvmlock.Ref{VG: vg, LV: lv}) && d.layer == "" {
			return !c.Wiped[host][d.name]
		}
	}
	return false
}

// Wiped[host][name] and the other maps of the loss are kept by host.
func set(m map[int]map[string]bool, host int, key string, v bool) {
	if m[host] == nil {
		m[host] = map[string]bool{}
	}
	if v {
		m[host][key] = true
	} else {
		delete(m[host], key)
	}
}

// DMName is the device-mapper name of an LV (or of its layer): VG-LV, each
// '-' inside a name doubled.
func DMName(vg, lv, layer string) string {
	n := strings.ReplaceAll(vg, "-", "--") + "-" + strings.ReplaceAll(lv, "-", "--")
	if layer != "" {
		n += "-" + layer
	}
	return n
}

type device struct {
	name, uuid, layer string
	ref               lvmlock.Ref
	open              int
}

// devices lists host's LVM devices, sorted by name.
func (c *Cluster) devices(host int) []device {
	var out []device
	for _, vgName := range slices.Sorted(maps.Keys(c.VGs)) {
		vg := c.VGs[vgName]
		vgUUID := fakeUUID("vg" + vgName)
		if vg.Shared && (c.Started[host][vgName] || c.Dropped[host][vgName]) {
			out = append(out, device{name: DMName(vgName, "lvmlock", ""), uuid: "LVM-" + vgUUID + fakeUUID("lvmlock"+vgName),
				ref: lvmlock.Ref{VG: vgName, LV: "lvmlock"}, open: 1})
		}
		for _, lvName := range slices.Sorted(maps.Keys(vg.LVs)) {
			lv := vg.LVs[lvName]
			if lv.Holders[host] == lvmlock.ModeNone && !lv.Stale[host] {
				continue
			}
			r := lvmlock.Ref{VG: vgName, LV: lvName}
			top := device{name: DMName(vgName, lvName, ""), uuid: "LVM-" + vgUUID + fakeUUID(lv.UUID), ref: r}
			if c.Open[host][r] {
				top.open = 1
			}
			if !c.Removed[host][top.name] {
				out = append(out, top)
			}
			for _, layer := range c.Layers[r] {
				d := device{name: DMName(vgName, lvName, layer), uuid: top.uuid + "-" + layer, ref: r, layer: layer}
				if !c.Wiped[host][top.name] && !c.Removed[host][top.name] {
					d.open = 1 // the LV's own table maps onto it
				}
				if !c.Removed[host][d.name] {
					out = append(out, d)
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b device) int { return strings.Compare(a.name, b.name) })
	return out
}

// fakeUUID is a 32-character lvm UUID (without dashes) made from s.
func fakeUUID(s string) string {
	var b strings.Builder
	for i := 0; b.Len() < 32; i++ {
		c := s[i%len(s)]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			b.WriteByte(c)
		} else {
			b.WriteByte('x')
		}
	}
	return b.String()
}

// dmsetup answers the commands lvhook runs, as dmsetup 1.02 prints them.
func (h *Host) dmsetup(args []string, out, errOut *strings.Builder) bool {
	c := h.c
	devs := c.devices(h.id)
	named := func(i int) (device, bool) {
		if len(args) != i+2 || args[i] != "--" {
			return device{}, false
		}
		for _, d := range devs {
			if d.name == args[i+1] {
				return d, true
			}
		}
		return device{name: args[i+1]}, false
	}
	switch {
	case slices.Equal(args, []string{"info", "-c", "--noheadings", "--separator", "|", "-o", "name,uuid,open,vg_name,lv_name,lv_layer"}):
		if len(devs) == 0 {
			out.WriteString("No devices found\n")
		}
		for _, d := range devs {
			fmt.Fprintf(out, "%s|%s|%d|%s|%s|%s\n", d.name, d.uuid, d.open, d.ref.VG, d.ref.LV, d.layer)
		}
	case slices.Equal(args, []string{"table"}):
		if len(devs) == 0 {
			out.WriteString("No devices found\n")
		}
		for i, d := range devs {
			if c.Wiped[h.id][d.name] {
				fmt.Fprintf(out, "%s: 0 2097152 error \n", d.name)
			} else {
				fmt.Fprintf(out, "%s: 0 2097152 linear 8:16 %d\n", d.name, 2048+i*2097152)
			}
		}
	case len(args) > 0 && args[0] == "wipe_table":
		d, ok := named(1)
		if !ok {
			fmt.Fprintf(errOut, "Device %s not found\nCommand failed.\n", d.name)
			return true
		}
		set(c.Wiped, h.id, d.name, true)
	case len(args) > 0 && args[0] == "remove":
		d, ok := named(1)
		switch {
		case !ok:
			fmt.Fprintf(errOut, "Device %s not found\nCommand failed.\n", d.name)
			return true
		case d.open > 0:
			fmt.Fprintf(errOut, "device-mapper: remove ioctl on %s  failed: Device or resource busy\nCommand failed.\n", d.name)
			return true
		case d.ref.LV == "lvmlock":
			// sanlock's, which lvhook leaves alone.
		default:
			// The LV is gone from this host once its last device is.
			set(c.Removed, h.id, d.name, true)
			if !slices.ContainsFunc(c.devices(h.id), func(x device) bool { return x.ref == d.ref }) {
				c.forget(h.id, c.VGs[d.ref.VG].LVs[d.ref.LV], d.ref)
			}
		}
	default:
		fmt.Fprintf(errOut, "fake dmsetup does not model %q\n", args)
		return true
	}
	return false
}

// forget removes lv's device from host: its lock (kept on the storage as a
// ghost while the storage is lost or the VG killed) and its wiped table.
func (c *Cluster) forget(host int, lv *LV, r lvmlock.Ref) {
	if m := lv.Holders[host]; m != lvmlock.ModeNone && (c.Lost[host][r.VG] || c.Killed[host][r.VG]) {
		lv.Ghosts[host] = m
	}
	delete(lv.Holders, host)
	delete(lv.Stale, host)
	for _, layer := range append([]string{""}, c.Layers[r]...) {
		set(c.Wiped, host, DMName(r.VG, r.LV, layer), false)
		set(c.Removed, host, DMName(r.VG, r.LV, layer), false)
	}
}

// lockdDump answers `lvmlockctl --info --dump`: a client line, then one
// lockspace line per started VG (lvm 2.03.16's print_lockspace).
func (h *Host) lockdDump(out *strings.Builder) {
	c := h.c
	fmt.Fprintf(out, "info=client pid=%d fd=9 pi=1 id=1 name=lvmlockctl\n", 4000+h.id)
	for _, name := range slices.Sorted(maps.Keys(c.VGs)) {
		if !c.Started[h.id][name] {
			continue
		}
		kill := 0
		if c.Killed[h.id][name] {
			kill = 1
		}
		fmt.Fprintf(out, "info=ls ls_name=lvm_%s vg_name=%s vg_uuid=%s vg_sysid=. vg_args=1.0.0:lvmlock lm_type=sanlock host_id=%d "+
			"create_fail=0 create_done=1 thread_work=0 thread_stop=0 thread_done=0 kill_vg=%d drop_vg=0 sanlock_gl_enabled=0\n",
			name, name, fakeUUID("vg"+name), h.id, kill)
	}
}

// vgchange answers `vgchange --lock-start -- VG`.
func (h *Host) vgchange(args []string, errOut *strings.Builder) bool {
	c := h.c
	if len(args) != 3 || args[0] != "--lock-start" || args[1] != "--" {
		fmt.Fprintf(errOut, "  fake vgchange does not model %q\n", args)
		return true
	}
	vg := c.VGs[args[2]]
	switch {
	case vg == nil:
		fmt.Fprintf(errOut, "  Volume group \"%s\" not found\n  Cannot process volume group %s\n", args[2], args[2])
		return true
	case !c.Lvmlockd[h.id]:
		fmt.Fprintf(errOut, "  WARNING: lvmlockd process is not running.\n  VG %s start failed: lvmlockd is not running\n", args[2])
		return true
	case !vg.Shared:
		return false
	}
	set(c.Started, h.id, args[2], true)
	set(c.Dropped, h.id, args[2], false)
	set(c.Killed, h.id, args[2], false)
	return false
}
