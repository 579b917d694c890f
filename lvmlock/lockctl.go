package lvmlock

import (
	"bufio"
	"bytes"
	"strings"
)

// Mode is a local LV lock mode as lvmlockd holds it.
type Mode string

const (
	ModeNone Mode = ""   // not locked (inactive) on this host
	ModeSh   Mode = "sh" // shared
	ModeEx   Mode = "ex" // exclusive
	// ModeActive: active here, lock mode not read (State with modes=false).
	ModeActive Mode = "active"
)

func (m Mode) String() string {
	if m == ModeNone {
		return "none"
	}
	return string(m)
}

// Lockspace is one VG's lockspace as `lvmlockctl -i` shows it.
type Lockspace struct {
	VG       string
	LockType string
	// LVs maps an LV UUID to the mode this host holds.
	LVs map[string]Mode
}

// Locks is this host's lvmlockd state, by VG name. A shared VG that is absent
// has no started lockspace here.
type Locks map[string]*Lockspace

// Mode returns the local mode of the LV with the given UUID in vg.
func (l Locks) Mode(vg, lvUUID string) Mode {
	if ls := l[vg]; ls != nil {
		return ls.LVs[lvUUID]
	}
	return ModeNone
}

// Started reports whether vg's lockspace is joined on this host.
func (l Locks) Started(vg string) bool { return l[vg] != nil }

// ParseLockctl reads `lvmlockctl -i` (lvm2 daemons/lvmlockd/lvmlockctl.c,
// format_info): a "VG <name> lock_type=<t> <uuid>" header per lockspace, then
// resource lines, among them "LK LV ex|sh|un <lv_uuid>". Unknown lines are
// skipped so that newer formats degrade to "no lock seen", never to a panic.
func ParseLockctl(out []byte) Locks {
	locks := Locks{}
	var cur *Lockspace
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) >= 3 && f[0] == "VG" && strings.HasPrefix(f[2], "lock_type="):
			cur = &Lockspace{VG: f[1], LockType: strings.TrimPrefix(f[2], "lock_type="), LVs: map[string]Mode{}}
			locks[cur.VG] = cur
		case cur != nil && len(f) >= 4 && f[0] == "LK" && f[1] == "LV":
			switch Mode(f[2]) {
			case ModeEx, ModeSh:
				// A resource can list several lk lines; ex wins over sh.
				if cur.LVs[f[3]] != ModeEx {
					cur.LVs[f[3]] = Mode(f[2])
				}
			}
		}
	}
	return locks
}
