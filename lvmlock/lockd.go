package lvmlock

import (
	"bufio"
	"bytes"
	"context"
	"strings"
)

// LockdLockspace is one lockspace of lvmlockd's raw info dump: whether a
// kill is in progress (lvmlockctl --kill sent kill_vg: the lease storage was
// lost) and whether its locks are being dropped (drop_vg).
type LockdLockspace struct {
	VG     string
	KillVG bool
	DropVG bool
}

// ParseLockdInfo reads `lvmlockctl --info --dump`: lvmlockd's dump_info
// lines as it writes them (daemons/lvmlockd/lvmlockd-core.c), "info=TYPE
// key=value ..."; the lockspace lines (print_lockspace) are "info=ls
// ls_name=lvm_vg0 vg_name=vg0 ... kill_vg=N drop_vg=N ...". Other lines, and
// keys it does not know, are skipped: the key set differs between lvm
// releases (2.03.31 has no vg_sysid).
func ParseLockdInfo(out []byte) map[string]LockdLockspace {
	spaces := map[string]LockdLockspace{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || f[0] != "info=ls" {
			continue
		}
		var ls LockdLockspace
		for _, kv := range f[1:] {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "vg_name":
				ls.VG = v
			case "kill_vg":
				ls.KillVG = v != "" && v != "0"
			case "drop_vg":
				ls.DropVG = v != "" && v != "0"
			}
		}
		if ls.VG != "" {
			spaces[ls.VG] = ls
		}
	}
	return spaces
}

// LockdInfo returns lvmlockd's lockspaces by VG (`lvmlockctl --info --dump`).
func (c *Client) LockdInfo(ctx context.Context) (map[string]LockdLockspace, error) {
	out, err := c.lockctlDump(ctx, "--info", "--dump")
	if err != nil {
		return nil, err
	}
	return ParseLockdInfo(out), nil
}
