package killvg

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/lvmlock/lvmfake"
)

// killed is the world after a kill that succeeded: lvmlockctl dropped vg0.
func killed(t *testing.T) *world {
	w := newWorld(t)
	if rec, err := w.killer().Kill(context.Background(), "vg0", false); err != nil || !rec.Verified {
		t.Fatalf("Kill = %+v, %v", rec, err)
	}
	w.lvm.Drop(1, "vg0")
	return w
}

// The storage is back: the error devices go, the lockspace starts again
// (lvmlock's StartLockspaces, whose retries its own tests show), the record
// goes; host 2 may take the LVs once host 1's leases expired.
func TestRecover(t *testing.T) {
	w := killed(t)
	w.lvm.ResetCalls()
	k := w.killer()
	if done, err := k.Recover(context.Background(), "vg0"); err != nil || !done {
		t.Fatalf("Recover = %v, %v", done, err)
	}
	if _, found, _ := w.state.LoadKilled("vg0"); found {
		t.Error("record still there")
	}
	if got := len(w.calls("vgchange --lock-start -- vg0")); got != 1 {
		t.Errorf("%d lock starts, want 1", got)
	}
	if removes := w.calls("dmsetup remove"); len(removes) != 5 {
		t.Errorf("removed %q, want vg0's five error devices", removes)
	}
	for _, lv := range []string{"vm1-root", "pool"} {
		if w.lvm.Mode(1, "vg0", lv) != lvmlock.ModeNone || w.lvm.Writable(1, "vg0", lv) {
			t.Errorf("vg0/%s still has a device", lv)
		}
	}
	if !w.lvm.Writable(1, "vg1", "vm3-root") {
		t.Error("vg1 touched")
	}
	w.lvm.Expire(1, "vg0")
	h2 := &lvmlock.Client{Runner: w.lvm.Host(2)}
	if _, err := h2.Activate(context.Background(), lvmlock.Assume(nil), []lvmlock.Target{{Ref: lvmlock.Ref{VG: "vg0", LV: "vm1-root"}, Mode: lvmlock.ModeEx}}); err != nil {
		t.Errorf("host 2 cannot take vm1-root once host 1's leases expired: %v", err)
	}
	if done, err := k.Recover(context.Background(), "vg0"); err != nil || done {
		t.Errorf("second recover = %v, %v; want nothing done", done, err)
	}
}

// What must happen before a recovery, each said in one line.
func TestRecoverNotYet(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(w *world)
		want  string
	}{
		{"a domain kill-vg could not destroy holds its LV", func(w *world) {
			w.lvm.Do(func(c *lvmfake.Cluster) { c.Open[1][lvmlock.Ref{VG: "vg0", LV: "vm2-root"}] = true })
		}, "vg0-vm2--root is still open (1)"},
		{"the kill did not succeed: lvmlockd still has the VG killed", func(w *world) {
			w.lvm.Do(func(c *lvmfake.Cluster) {
				c.Started[1]["vg0"] = true
				c.Killed[1]["vg0"] = true
			})
		}, "run `lvmlockctl --drop vg0`"},
		{"a device kept its table", func(w *world) {
			w.lvm.Do(func(c *lvmfake.Cluster) { delete(c.Wiped[1], "vg0-vm1--root") })
		}, "vg0-vm1--root still has a linear table"},
		{"the lockspace does not start", func(w *world) {
			w.lvm.Intercept = func(_ int, args []string) (string, string, error, bool) {
				if args[0] == "vgchange" {
					return "", "  VG vg0 start failed: invalid sanlock host_id, set in lvmlocal.conf\n", lvmfake.ExitError{Code: 5}, true
				}
				return "", "", nil, false
			}
		}, "the lockspace of VG vg0 did not start (1 tries: VG vg0 start failed: invalid sanlock host_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := killed(t)
			tc.setup(w)
			_, err := w.killer().Recover(context.Background(), "vg0")
			if !errors.Is(err, ErrNotYet) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("Recover = %v\nwant one line wrapping ErrNotYet with %q", err, tc.want)
			}
			if _, found, _ := w.state.LoadKilled("vg0"); !found {
				t.Error("record removed by a recovery that did not happen")
			}
		})
	}
}

// A kill forced by hand on a VG whose lockspace runs (lvmlockd holds the
// LVs' locks, nothing dropped them): lvm deactivates the LVs, which
// releases their locks; the lockspace is left as it is.
func TestRecoverForcedKill(t *testing.T) {
	w := newWorld(t)
	w.lvm.Do(func(c *lvmfake.Cluster) { c.Killed[1]["vg0"] = false })
	if rec, err := w.killer().Kill(context.Background(), "vg0", true); err != nil || !rec.Verified {
		t.Fatalf("Kill --force = %+v, %v", rec, err)
	}
	w.lvm.ResetCalls()
	if done, err := w.killer().Recover(context.Background(), "vg0"); err != nil || !done {
		t.Fatalf("Recover = %v, %v", done, err)
	}
	if got := w.calls("lvchange -an"); len(got) != 1 || !strings.Contains(got[0], "vg0/vm1-root") {
		t.Errorf("lvchange calls %q, want one -an of vg0's active LVs", got)
	}
	if len(w.calls("dmsetup remove")) != 0 || len(w.calls("vgchange")) != 0 {
		t.Error("a running lockspace's LVs go through lvm, not dmsetup, and it is not started again")
	}
	if w.lvm.Mode(1, "vg0", "vm1-root") != lvmlock.ModeNone {
		t.Error("vm1-root still locked here")
	}
}
