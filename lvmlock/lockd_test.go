package lvmlock_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/lvmlock/lvmfake"
)

// TestEnsureLockspace: a lock start is tried again while it fails for a
// reason that passes (EARGS, a start in progress, a vgchange that exits 0
// without joining) and not for one that does not; the pauses grow.
func TestEnsureLockspace(t *testing.T) {
	const eargs = "  VG vg0 start failed: invalid parameters for sanlock\n"
	tests := []struct {
		name string
		// answers are vgchange's stderr for its first runs ("" exits 0
		// without joining until the last, which joins).
		answers []string
		tries   int
		ok      bool
		sleeps  []time.Duration
	}{
		{"started at once", nil, 1, true, nil},
		{"EARGS twice", []string{eargs, eargs}, 3, true, []time.Duration{5 * time.Second, 10 * time.Second}},
		{"exit 0 without joining", []string{""}, 2, true, []time.Duration{5 * time.Second}},
		{"start in progress", []string{"  VG vg0 lock skipped: lock start in progress\n"}, 2, true, []time.Duration{5 * time.Second}},
		{"bad host_id", []string{"  VG vg0 start failed: invalid sanlock host_id, set in lvmlocal.conf\n"}, 1, false, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := lvmfake.NewCluster(1)
			c.AddVG("vg0", true, "a")
			c.Do(func(c *lvmfake.Cluster) { c.Started[1]["vg0"] = false })
			runs := 0
			c.Intercept = func(_ int, args []string) (string, string, error, bool) {
				if args[0] != "vgchange" {
					return "", "", nil, false
				}
				runs++
				if runs > len(tc.answers) {
					return "", "", nil, false // the model joins
				}
				if tc.answers[runs-1] == "" {
					return "", "", nil, true
				}
				return "", tc.answers[runs-1], lvmfake.ExitError{Code: 5}, true
			}
			var sleeps []time.Duration
			sleep := func(_ context.Context, d time.Duration) error { sleeps = append(sleeps, d); return nil }
			cl := &lvmlock.Client{Runner: c.Host(1), Log: zerolog.Nop()}
			tries, err := cl.EnsureLockspace(context.Background(), "vg0", sleep)
			if (err == nil) != tc.ok || tries != tc.tries {
				t.Errorf("EnsureLockspace = %d tries, %v; want %d tries, ok %v", tries, err, tc.tries, tc.ok)
			}
			if fmt.Sprint(sleeps) != fmt.Sprint(tc.sleeps) {
				t.Errorf("pauses %v, want %v", sleeps, tc.sleeps)
			}
		})
	}
}

// TestEnsureLockspaceBound: a lock start that keeps failing for a reason
// that passes stops at ctx's end.
func TestEnsureLockspaceBound(t *testing.T) {
	c := lvmfake.NewCluster(1)
	c.AddVG("vg0", true, "a")
	c.Intercept = func(_ int, args []string) (string, string, error, bool) {
		if args[0] == "vgchange" {
			return "", "  VG vg0 start failed: invalid parameters for sanlock\n", lvmfake.ExitError{Code: 5}, true
		}
		return "", "", nil, false
	}
	c.Do(func(c *lvmfake.Cluster) { c.Started[1]["vg0"] = false })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	cl := &lvmlock.Client{Runner: c.Host(1), Log: zerolog.Nop()}
	start := time.Now()
	tries, err := cl.EnsureLockspace(ctx, "vg0", nil)
	if err == nil || !lvmlock.IsLockStartTransient(err) || time.Since(start) > 2*time.Second || tries != 1 {
		t.Errorf("EnsureLockspace = %d tries, %v after %s; want the transient failure at the deadline", tries, err, time.Since(start))
	}
}
