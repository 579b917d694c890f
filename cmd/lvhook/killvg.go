package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"github.com/lvhook/lvhook/config"
	"github.com/lvhook/lvhook/killvg"
	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/state"
	"github.com/lvhook/lvhook/virt"
)

const killVGDoc = `lvm.conf's lvmlockctl_kill_command (lvm2 >= 2.03.12), in section global:

    lvmlockctl_kill_command = "/usr/sbin/lvhook kill-vg"

When sanlock loses this host's access to a VG's lease storage, lvmlockd runs
lvmlockctl --kill VG, which runs this command with the VG appended, about
once a second; about 40 s later the watchdog resets the host, killing every
domain on it. When the command exits 0, lvmlockctl drops the VG's locks and
the reset is avoided (lvmlockd(8), "sanlock lease storage failure").

kill-vg replaces the table of every device-mapper device of the VG on this
host (not its lvmlock LV) by the error target: the LVs' own devices, then
their layers; a wipe waits for the writes in flight. It checks the tables,
records what it did in the state directory (killed/VG.json), then destroys
every domain of this host that uses the VG. Exit status 0 only when no
device of the VG can be written any more; 1 otherwise, or when another run
of the same VG held it until the deadline; 2 for a usage error or when
lvmlockd is not killing the VG and lvmlockctl did not start the command
(--force overrides). The whole run is bounded by kill_vg_timeout (25s). It
writes nothing on stdout (lvmlockctl never reads it) and logs to the journal
(journalctl -t lvhook). A config file lvhook cannot use does not stop it: it
uses the defaults, with the file's state_dir and daemon.libvirt_socket when
it gives them. Storage that hangs without failing blocks the wipes in the
kernel: kill-vg then exits 1 at its bound and the watchdog resets the host,
as without lvhook.

Until the VG is recovered, the hook refuses to start domains with LVs in it
and does not run lvm for them at stop, the lock helper leaves them alone,
and lvhook check reports vg-killed.

--recover VG, once the storage is back: refuses while a wiped device is open
or while lvmlockd still holds the VG killed (no run succeeded); removes the
error devices and starts the VG's lockspace again (vgchange --lock-start,
tried again while it fails for a passing reason, within --timeout: after a
lost lease sanlock may take about 3 minutes), or, after a kill forced on a
running lockspace, deactivates the LVs with lvm; then forgets the kill.
Exit status 0 recovered (or nothing to recover), 1 not yet (the line says
what to do), 2 usage.`

func killVGCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:        "kill-vg",
		Usage:       "make every LV of a VG unwritable on this host and destroy its domains (lvm.conf's lvmlockctl_kill_command)",
		ArgsUsage:   "VG",
		Description: killVGDoc,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "force", Usage: "kill the VG although lvmlockd is not killing it and lvmlockctl did not start this command"},
			&cli.BoolFlag{Name: "recover", Usage: "once the storage is back: remove the error devices, start the VG's lockspace, forget the kill"},
			&cli.DurationFlag{Name: "timeout", Value: 5 * time.Minute, Usage: "--recover: give up after this long"},
		},
		// One line on stderr, never the help on stdout: lvmlockctl gives
		// the command a pipe it never reads.
		OnUsageError: func(_ *cli.Context, err error, _ bool) error { return fmt.Errorf("kill-vg: %w", err) },
		Action: func(c *cli.Context) error {
			e.code = exitUsage
			if c.NArg() != 1 {
				return fmt.Errorf("kill-vg: name one VG, got %d arguments", c.NArg())
			}
			vg := c.Args().First()
			if err := lvmlock.ValidVG(vg); err != nil {
				return fmt.Errorf("kill-vg: %w", err)
			}
			if c.Bool("recover") {
				return recoverVG(c, e, vg)
			}
			return killVG(c, e, vg)
		},
	}
}

// killerFor builds the Killer from the config file, or from the defaults
// when the file cannot be used: a typo must not cost the host its domains.
func killerFor(e *env, timeout time.Duration) (*killvg.Killer, zerolog.Logger) {
	cfgPath, mustExist := config.Path()
	cfg, cfgErr := config.Load(cfgPath, mustExist)
	if cfgErr != nil {
		cfg = config.Salvage(cfgPath)
	}
	log := newLogger(cfg.LogLevel, e.Stderr, zerolog.InfoLevel)
	if cfgErr != nil {
		log.Error().Err(cfgErr).Str("state_dir", cfg.StateDir).Str("libvirt_socket", cfg.Daemon.LibvirtSocket).
			Msg("config file unusable: kill-vg uses the defaults, with the file's state_dir and libvirt_socket when it gives them")
	}
	var runner lvmlock.Runner = lvmlock.ExecRunner{Timeout: timeout}
	if e.runner != nil {
		runner = e.runner
	}
	sock := cfg.Daemon.LibvirtSocket
	k := &killvg.Killer{
		Config: cfg,
		LVM:    &lvmlock.Client{Runner: runner, Log: log},
		State:  &state.State{Dir: cfg.StateDir},
		Connect: func(ctx context.Context) (killvg.Libvirt, error) {
			return e.dialRW(ctx, sock)
		},
		Log:     log,
		Parent:  e.parent,
		Sanlock: lvmlock.Sanlock{Runner: runner},
	}
	return k, log
}

func killVG(c *cli.Context, e *env, vg string) error {
	if e.Stdout == os.Stdout {
		// Nothing below may write on stdout: lvmlockctl waits for this
		// command without reading its pipe.
		if devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0); err == nil {
			_ = syscall.Dup3(int(devnull.Fd()), 1, 0)
			devnull.Close()
		}
	}
	k, _ := killerFor(e, 0)
	ctx, cancel := context.WithTimeout(c.Context, k.Config.KillVGTimeout.D())
	defer cancel()
	rec, err := k.Kill(ctx, vg, c.Bool("force"))
	switch {
	case lvmlock.IsInvalidName(err) || errors.Is(err, killvg.ErrNotKilled):
		return fmt.Errorf("kill-vg: %w", err)
	case err != nil:
		e.code = exitFailure
		return fmt.Errorf("kill-vg: %w", err)
	case !rec.Verified:
		e.code = exitFailure
		var left []string
		for _, d := range rec.Left {
			left = append(left, strings.TrimPrefix(d.Name+": "+d.Why, ": "))
		}
		return fmt.Errorf("kill-vg: VG %s: %d device(s) may still be written (%s); lvmlockd keeps its locks and the watchdog will reset this host",
			vg, len(rec.Left), strings.Join(left, "; "))
	}
	e.code = exitOK
	return nil
}

func recoverVG(c *cli.Context, e *env, vg string) error {
	timeout := c.Duration("timeout")
	k, _ := killerFor(e, timeout)
	ctx, cancel := context.WithTimeout(c.Context, timeout)
	defer cancel()
	done, err := k.Recover(ctx, vg)
	if err != nil {
		e.code = exitFailure
		return fmt.Errorf("kill-vg --recover: %w", err)
	}
	e.code = exitOK
	if !done {
		fmt.Fprintf(c.App.Writer, "VG %s was not killed on this host: nothing to recover\n", vg)
		return nil
	}
	fmt.Fprintf(c.App.Writer, "VG %s recovered on this host: its domains may start here again\n", vg)
	return nil
}

// dialLibvirtRW connects kill-vg to the libvirtd at sock (read-write: it
// destroys domains).
func dialLibvirtRW(ctx context.Context, sock string) (killvg.Libvirt, error) {
	c, err := virt.Connect(ctx, sock)
	if err != nil {
		return nil, err
	}
	return c, nil
}
