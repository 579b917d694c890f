package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/lvhook/lvhook/config"
	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/state"
)

func lockspacesCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "lockspaces",
		Usage:     "start the shared VGs' lockspaces and wait until they are joined (lvhook-lockspaces.service, before libvirtd at boot)",
		ArgsUsage: "[VG...]",
		Description: `Starts the lockspace of each VG named, else of each VG in the lockspaces
config key, else of every shared VG lvm sees, and waits until sanlock has
joined it: a start lvm reports as done is verified, since vgchange can exit 0
after a failed join. Failures that pass (lvmlockd's "invalid parameters for
sanlock" right after it started, a host whose lease of before a crash has not
expired yet) are tried again, after 2, 4, 8 ... 30 s, for at most --timeout.
A lockspace already joined is left as it is.

lvhook-lockspaces.service runs it at boot after lvmlockd and lvm2's
lvmlocks.service and before libvirtd (and virtqemud), so that the domains
libvirt autostarts find their lockspaces joined. With lvmlockd not running,
or no shared VG, it has nothing to do and exits 0. A configuration file
lvhook cannot use does not stop it: it says so and uses the defaults.

A VG that lvhook kill-vg killed on this host (its lease storage was lost) is
not started: ` + "`lvhook kill-vg --recover VG`" + ` checks its devices and starts it.

Exit status: 0 every lockspace joined (or nothing to do), 1 some not joined
in time (each named on stderr with lvm's line) or killed, 2 usage.`,
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: "timeout", Usage: "give up after `DURATION` (default: lockspace_start_timeout, 5m)"},
		},
		Action: func(c *cli.Context) error {
			for _, vg := range c.Args().Slice() {
				if err := lvmlock.ValidVG(vg); err != nil {
					return err
				}
			}
			if !runLockspaces(c.Context, e, c.Args().Slice(), c.Duration("timeout")) {
				e.code = exitFailure
			}
			return nil
		},
	}
}

// runLockspaces starts the lockspaces and reports whether all are joined.
func runLockspaces(parent context.Context, e *env, vgs []string, timeout time.Duration) bool {
	cfgPath, mustExist := config.Path()
	cfg, err := config.Load(cfgPath, mustExist)
	if err != nil {
		// At boot a typo must not keep the lockspaces down: every domain
		// start would then be refused.
		fmt.Fprintf(e.Stderr, "lvhook lockspaces: %s; using the defaults\n", lvmlock.OneLine(err.Error()))
		cfg = config.Default()
	}
	if timeout <= 0 {
		timeout = cfg.LockspaceStartTimeout.D()
	}
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	// No per-command bound: a first join after a crash keeps vgchange
	// waiting for about 160 s; the whole run is bounded by timeout.
	runner := lvmlock.ExecRunner{}
	lvm := &lvmlock.Client{Runner: runner}
	san := lvmlock.Sanlock{Runner: runner}

	if _, err := lvm.Locks(ctx); lvmlock.IsLvmlockdNotRunning(err) {
		fmt.Fprintln(e.Stdout, "lvmlockd is not running on this host: no lockspace to start")
		return true
	}
	if len(vgs) == 0 {
		vgs = cfg.Lockspaces
	}
	if len(vgs) == 0 {
		if vgs, err = lvm.SharedVGs(ctx); err != nil {
			fmt.Fprintf(e.Stderr, "lvhook lockspaces: cannot list the shared VGs: %s\n", lvmlock.OneLine(err.Error()))
			return false
		}
	}
	if len(vgs) == 0 {
		fmt.Fprintln(e.Stdout, "no shared VG on this host: no lockspace to start")
		return true
	}
	// A VG lvhook kill-vg killed here is recovered by `kill-vg --recover`,
	// which checks its devices first: never started behind its back.
	killed, kerr := (&state.State{Dir: cfg.StateDir}).KilledVGs()
	if kerr != nil {
		fmt.Fprintf(e.Stderr, "lvhook lockspaces: cannot read the kill records (%s); starting as if none\n", lvmlock.OneLine(kerr.Error()))
	}
	var skipped []string
	vgs = slices.DeleteFunc(slices.Clone(vgs), func(vg string) bool {
		if k, ok := killed[vg]; ok {
			fmt.Fprintf(e.Stderr, "lvhook lockspaces: %s: killed by lvhook kill-vg at %s (its lease storage was lost); not started: recover it with `lvhook kill-vg --recover %s`\n",
				vg, k.Started.UTC().Format(time.RFC3339), vg)
			skipped = append(skipped, vg)
			return true
		}
		return false
	})
	start := time.Now()
	failed := lvm.StartLockspaces(ctx, san, vgs, func(a lvmlock.StartAttempt) {
		if a.Err == nil {
			fmt.Fprintf(e.Stdout, "%s: lockspace joined (try %d, %.1f s since start)\n", a.VG, a.Attempt, time.Since(start).Seconds())
			return
		}
		fmt.Fprintf(e.Stdout, "%s: try %d: %s\n", a.VG, a.Attempt, lvmlock.OneLine(a.Err.Error()))
	})
	var joined []string
	for _, vg := range vgs {
		if err, ok := failed[vg]; ok {
			fmt.Fprintf(e.Stderr, "lvhook lockspaces: %s: lockspace not joined after %.0f s: %s\n", vg, time.Since(start).Seconds(), lvmlock.OneLine(err.Error()))
		} else {
			joined = append(joined, vg)
		}
	}
	if len(joined) > 0 {
		fmt.Fprintf(e.Stdout, "joined: %s\n", strings.Join(joined, " "))
	}
	return len(failed) == 0 && len(skipped) == 0
}
