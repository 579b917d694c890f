package main

import (
	"context"
	"fmt"
	"io"
	"os/signal"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"github.com/lvhook/lvhook/config"
	"github.com/lvhook/lvhook/evacuate"
	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/peer"
	"github.com/lvhook/lvhook/state"
	"github.com/lvhook/lvhook/virt"
)

// evacuateConn is evacuate's connection to libvirtd.
type evacuateConn interface {
	evacuate.Libvirt
	Close() error
}

// dialEvacuate connects evacuate to the libvirtd at sock (read-write: it
// migrates and stops domains).
func dialEvacuate(ctx context.Context, sock string) (evacuateConn, error) {
	c, err := virt.Connect(ctx, sock)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// evacuateDoc is evacuate's description, in --help and lvhook(8).
const evacuateDoc = `Live-migrates every running domain of this host to its peers
([[daemon.peer]]), as an operator would: libvirt's own peer-to-peer migration
(virsh migrate --live --p2p --abort-on-error) to the peer's libvirt_uri
(default qemu+tls://NAME/system), with its migrate_uri when set; lvhook's
handover moves the LVs as for any live migration. Each peer's lock helper is
asked first: a peer is used when it answers within daemon.peer_timeout with
libvirt up, is not draining (evacuating itself), and has the domain's memory
(libvirt's maximum) plus evacuate.memory_margin_mib free beyond what this
evacuation already sends it. Among those, the one sent the fewest domains,
then the one with the most free memory.

Order: the priority of each domain's lvhook metadata (-1000 to 1000, default
0), highest first, then by name:
  <lvhook:domain xmlns:lvhook="https://lvhook.dev/xmlns/domain/1" priority="10" fallback="managedsave"/>

A domain that cannot move (no peer can take it, an LV that cannot be shared,
a crashed guest, a failed migration) gets its fallback once every migration
has ended, lowest priority first: its metadata's fallback, else
evacuate.fallback. managedsave: virsh managedsave; start it again on this
host only (restoring the image after the domain ran on another host resumes
stale memory over newer disks, which corrupts their file systems). shutdown:
virsh shutdown, then virsh destroy after evacuate.shutdown_timeout (at once
for a crashed guest, which cannot shut down). leave: it
keeps running here, only when it holds every LV it needs exclusive as ex
(after a failed migration, up to daemon.exclusive_timeout for the lock helper
to convert them back); otherwise it is shut down: a domain is never left
holding a shared lock. Domains of one priority stop together (--parallel at
most at once), the next priority once they are done.
Incoming migrations, and outgoing ones another client started, are skipped.

While it runs, this host's lock helper tells the peers it is draining
(/run/lvhook/evacuating). The whole run is bounded by evacuate.timeout; the
migrations stop shutdown_timeout + 30 s before it, so that the fallbacks keep
their bound. One line per domain as it begins and ends (on stderr with
--json), then the table.

Exit status: 0 every domain migrated (or none to move); 1 some domain was not
migrated (the table says why), or its lvhook metadata could not be read; 2
nothing done (usage, a config file lvhook cannot use, libvirtd unreachable).
--dry-run asks the peers, prints the plan and changes nothing (exit 0 when
every domain would migrate). --at-shutdown is lvhook-evacuate.service's call
at shutdown: it does nothing, and exits 0, unless evacuate.at_shutdown = true.

--json writes one document, version 1:
  {"version": 1, "host", "dry_run", "started_at", "took_seconds",
   "summary": {"domains", "migrated", "not_migrated"},
   "peers": [{"name", "usable", "libvirt_up", "draining", "free_memory_bytes",
              "active_domains", "planned", "error"}],
   "domains": [{"name", "uuid", "priority", "memory_bytes",
                "plan": migrate|managedsave|shutdown|leave|skip, "target",
                "actions": [migrate|managedsave|leave|shutdown|destroy...],
                "result": migrated|saved|shut-down|destroyed|left|skipped|gone|
                          failed|not-done|planned,
                "took_seconds", "reason", "error", "metadata_error"}]}
New fields may appear in version 1; removing or redefining one changes the
version.`

func evacuateCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:        "evacuate",
		Usage:       "live-migrate every running domain of this host to its peers; give those that cannot move their fallback",
		Description: evacuateDoc,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "to", Usage: "migrate only to this peer (its [[daemon.peer]] name)"},
			&cli.IntFlag{Name: "parallel", Usage: "domains migrated (and stopped) at once, 1 to 8", DefaultText: "evacuate.parallel"},
			&cli.BoolFlag{Name: "dry-run", Usage: "ask the peers, print the plan, change nothing"},
			&cli.BoolFlag{Name: "json", Usage: "write the report as JSON (version 1) instead of a table; progress goes to stderr"},
			&cli.BoolFlag{Name: "at-shutdown", Usage: "lvhook-evacuate.service's call: do nothing unless evacuate.at_shutdown = true"},
		},
		Action: func(c *cli.Context) error {
			e.code = exitUsage
			if c.Args().Present() {
				return fmt.Errorf("evacuate: takes no arguments, got %q", c.Args().First())
			}
			if p := c.Int("parallel"); c.IsSet("parallel") && (p < 1 || p > 8) {
				return fmt.Errorf("evacuate: --parallel must be between 1 and 8, got %d", p)
			}
			cfgPath, mustExist := config.Path()
			cfg, err := config.Load(cfgPath, mustExist)
			if err != nil {
				return fmt.Errorf("evacuate: %w", err)
			}
			if c.Bool("at-shutdown") && !cfg.Evacuate.AtShutdown {
				fmt.Fprintf(e.Stderr, "lvhook: evacuate --at-shutdown: evacuate.at_shutdown is not true in %s: nothing to do\n", cfgPath)
				e.code = exitOK
				return nil
			}
			rep, err := runEvacuate(c, e, cfg)
			if err != nil {
				return fmt.Errorf("evacuate: %w", err)
			}
			if c.Bool("json") {
				err = rep.WriteJSON(c.App.Writer)
			} else {
				err = rep.WriteTable(c.App.Writer)
			}
			if err != nil {
				return fmt.Errorf("evacuate: write report: %w", err)
			}
			e.code = exitFailure
			if rep.OK() {
				e.code = exitOK
			}
			return nil
		},
	}
}

func runEvacuate(c *cli.Context, e *env, cfg config.Config) (*evacuate.Report, error) {
	// A stop (SIGTERM: systemd past TimeoutStopSec, or an operator's ^C)
	// aborts the migrations under way and reports what was done.
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	conn, err := e.dialEvacuate(dctx, cfg.Daemon.LibvirtSocket)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("cannot reach libvirt: %w", err)
	}
	defer conn.Close()
	var progress io.Writer = c.App.Writer
	if c.Bool("json") {
		progress = e.Stderr
	}
	log := newLogger(cfg.LogLevel, e.Stderr, zerolog.WarnLevel)
	ev := &evacuate.Evacuator{
		Config:   cfg,
		Host:     cfg.HostName(),
		Libvirt:  conn,
		LVM:      &lvmlock.Client{Runner: lvmlock.ExecRunner{Timeout: cfg.LVMTimeout.D()}, Log: log},
		State:    &state.State{Dir: cfg.StateDir},
		Peers:    &peer.HTTPSTransport{Credentials: peer.LazyCredentials(cfg.Daemon.CACert, cfg.Daemon.ClientCert, cfg.Daemon.ClientKey)},
		Log:      log,
		Progress: progress,
	}
	return ev.Run(ctx, evacuate.Options{To: c.String("to"), Parallel: c.Int("parallel"), DryRun: c.Bool("dry-run"),
		AtShutdown: c.Bool("at-shutdown")})
}
