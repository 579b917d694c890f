package lvmlock

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"strings"
	"time"

	"github.com/lvhook/lvhook/internal/clock"
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

// StartLockspace joins vg's lockspace on this host (`vgchange --lock-start`).
// vgchange may exit 0 although the join failed (tools/vgchange.c logs "Lock
// start failed" without failing): Locks tells whether it is started.
func (c *Client) StartLockspace(ctx context.Context, vg string) error {
	if err := ValidVG(vg); err != nil {
		return err
	}
	// A scan of storage that hangs must not outlast the caller's bound.
	_, err := c.runBounded(ctx, "vgchange", "--lock-start", "--", vg)
	return err
}

// IsLockStartTransient reports whether a failed lock start may succeed when
// tried again: lvmlockd's EARGS, "invalid parameters for sanlock", which
// lvmlockd-sanlock.c returns when udev has not yet made the lvmlock LV's
// device node ("FIXME: device is not always ready for us here"; seen at a
// first start and after a crash), and sanlock not running yet (restarting).
// A bad host_id or lvmlockd not enabled is not.
func IsLockStartTransient(err error) bool {
	var e *Error
	if !errors.As(err, &e) || e.Kind != KindLockStartFailed {
		return false
	}
	return strings.Contains(e.Stderr, "invalid parameters for sanlock") ||
		strings.Contains(e.Stderr, "lock manager sanlock is not running")
}

// EnsureLockspace starts vg's lockspace and returns once `lvmlockctl -i`
// lists it, trying again after a transient failure, a start still in
// progress or a vgchange that exited 0 without joining, with pauses from
// 5 s doubling up to 30 s (sleep, for tests; nil sleeps), until ctx ends.
// tries counts the vgchange runs.
func (c *Client) EnsureLockspace(ctx context.Context, vg string, sleep func(context.Context, time.Duration) error) (tries int, err error) {
	if sleep == nil {
		sleep = clock.Sleep
	}
	delay := 5 * time.Second
	for {
		tries++
		err := c.StartLockspace(ctx, vg)
		if err == nil || IsLockStartTransient(err) || IsLockspaceStarting(err) {
			locks, lerr := c.Locks(ctx)
			switch {
			case lerr != nil:
				return tries, lerr
			case locks.Started(vg):
				return tries, nil
			case err == nil:
				err = errors.New("vgchange --lock-start exited 0, but lvmlockctl -i does not list the VG yet")
			}
		} else {
			return tries, err
		}
		c.Log.Info().Err(err).Str("vg", vg).Int("try", tries).Dur("delay", delay).Msg("lockspace not started yet; trying again")
		if serr := sleep(ctx, delay); serr != nil {
			return tries, errors.Join(err, serr)
		}
		delay = min(2*delay, 30*time.Second)
	}
}
