package lvmfake

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/lvhook/lvhook/lvmlock"
)

// Where lvmlockd puts LV leases on the lvmlock LV: the first at 67 MiB, one
// per MiB (the offset of the first LV of a VG on the harness: 70254592).
const (
	firstLease = 70254592
	leaseSize  = 1 << 20
)

func lockArgs(vg *VG, lv *LV) string {
	if !vg.Shared {
		return ""
	}
	return fmt.Sprintf("1.0.0:%d", lv.Offset)
}

// sanlock answers the three reads lvhook makes, in sanlock 3.8's formats.
func (h *Host) sanlock(args []string, out, errOut *strings.Builder) bool {
	c := h.c
	cmd := strings.Join(args, " ")
	switch {
	case cmd == "client status":
		fmt.Fprintf(out, "daemon 00000000-0000-0000-0000-00000000000%d.kvm%d\np -1 helper\np -1 listener\n", h.id%10, h.id)
		for _, name := range slices.Sorted(maps.Keys(c.VGs)) {
			if c.Started[h.id][name] {
				fmt.Fprintf(out, "s lvm_%s:%d:/dev/mapper/%s-lvmlock:0\n", name, h.id, strings.ReplaceAll(name, "-", "--"))
			}
		}
	case len(args) == 5 && args[0] == "client" && args[1] == "host_status" && args[2] == "-s" && args[4] == "-D":
		vg := strings.TrimPrefix(args[3], "lvm_")
		if !c.Started[h.id][vg] {
			errOut.WriteString("host_status error -2\n")
			return true
		}
		const now = 5000
		for _, id := range slices.Sorted(maps.Keys(c.Started)) {
			if !c.Started[id][vg] {
				continue
			}
			ts, gen := 7000+id, cmp.Or(c.Generation[id], 3)
			if c.Left[id] {
				ts = 0
			}
			fmt.Fprintf(out, "%d timestamp %d\n", id, ts)
			fmt.Fprintf(out, "    last_check=%d\n    last_live=%d\n    last_req=0\n    owner_id=%d\n", now, now-c.Silent[id], id)
			fmt.Fprintf(out, "    owner_generation=%d\n    timestamp=%d\n    io_timeout=10\n", gen, ts)
			fmt.Fprintf(out, "    owner_name=00000000-0000-0000-0000-00000000000%d.kvm%d\n", id%10, id)
		}
	case len(args) == 3 && args[0] == "direct" && args[1] == "dump":
		var path string
		var off, size int64
		if n, err := fmt.Sscanf(strings.ReplaceAll(args[2], ":", " "), "%s %d %d", &path, &off, &size); n != 3 || err != nil {
			errOut.WriteString("Device " + args[2] + " not found.\n")
			return true
		}
		fmt.Fprintf(out, "%8s %36s %48s %10s %4s %4s %s\n", "offset", "lockspace", "resource", "timestamp", "own", "gen", "lver")
		for _, name := range slices.Sorted(maps.Keys(c.VGs)) {
			vg := c.VGs[name]
			if path != "/dev/mapper/"+strings.ReplaceAll(name, "-", "--")+"-lvmlock" {
				continue
			}
			lvs := make([]*LV, 0, len(vg.LVs))
			for _, n := range slices.Sorted(maps.Keys(vg.LVs)) {
				lvs = append(lvs, vg.LVs[n])
			}
			slices.SortFunc(lvs, func(a, b *LV) int { return int(a.Offset - b.Offset) })
			for _, lv := range lvs {
				if lv.Offset < off || lv.Offset >= off+size {
					continue
				}
				ts, own := 0, 0
				leases := lv.leases()
				for _, id := range slices.Sorted(maps.Keys(leases)) {
					own = id
					if leases[id] == lvmlock.ModeEx {
						ts = 9000 + id
					}
				}
				fmt.Fprintf(out, "%08d %36s %48s %010d %04d %04d %d\n", lv.Offset, "lvm_"+name, lv.UUID, ts, own, 3, 12)
				for _, id := range slices.Sorted(maps.Keys(leases)) {
					if leases[id] == lvmlock.ModeSh {
						fmt.Fprintf(out, "%106s%04d %04d SH\n", "", id, 3)
					}
				}
			}
		}
	default:
		errOut.WriteString("unknown sanlock command: " + cmd + "\n")
		return true
	}
	return false
}
