package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"github.com/lvhook/lvhook/check"
	"github.com/lvhook/lvhook/config"
	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/peer"
	"github.com/lvhook/lvhook/state"
	"github.com/lvhook/lvhook/virt"
)

// exitCannotCheck is check's status when nothing could be checked.
const exitCannotCheck = 2

// checkConn is check's connection to libvirtd.
type checkConn interface {
	check.Libvirt
	Close() error
}

// dialLibvirt connects check to the libvirtd at sock.
func dialLibvirt(ctx context.Context, sock string) (checkConn, error) {
	c, err := virt.Connect(ctx, sock)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// checkDoc is check's description, in `lvhook check --help` and lvhook(8);
// its list of problems comes from check.ProblemTable.
var checkDoc = checkDocHead + problemList() + checkDocTail

const checkDocHead = `Compares, for each domain and each of its LVs on this host, the lock the LV
should hold with the one it holds, and lists what would break a start or a
live migration. It changes nothing.

Expected lock: ex while the domain runs here (sh for <shareable/>,
<readonly/> and backing-chain disks), sh during a migration job (libvirt's
job operation migration-out or migration-in), none when it does not run here.
Actual lock: from lvs (active here) and lvmlockctl -i (ex or sh). Other hosts:
"none (ex here)" when this host holds ex, else what the peers' lock helpers
report, else (no peers configured, or one did not answer) the LV's lease as
sanlock wrote it on the VG's lvmlock LV, naming a host_id by the peer
configured with it (daemon.peer host_id), else by sanlock's host name; else
unknown. The hosts of each started lockspace come from sanlock: one that
stopped renewing its host lease (crashed, hung, cut off from the storage) is
reported with how long until its locks may be taken. For --all the cost is one
libvirt call for the list, one lvs and one lvmlockctl -i whatever the number
of domains, plus one XML and one job query per domain; then one sanlock client
status, one sanlock client host_status per started VG, and, when the peers do
not answer, one sanlock direct dump per VG. A VG killed here (lvhook kill-vg:
its lease storage lost) is not asked of lvm or sanlock, whose commands may
hang on it: kill-vg's record and one dmsetup info say what check reports.

Problems, worst first (codes are stable, texts may change):
`

const checkDocTail = `Each comes with one line of advice.

Exit status: 0 healthy, 1 problems found, 2 could not check (libvirtd, lvs,
lvmlockctl or the state directory unreadable, or an unknown domain: one line
on stderr, no report; or a config file lvhook cannot use: a report with the
one problem config-invalid).

--json writes one document, version 1:
  {"version": 1, "host", "checked_at", "healthy",
   "summary": {"domains", "lvs", "problems"},
   "problems": [{"code", "domain", "uuid", "vg", "lv", "message", "advice"}],
   "lockspaces": [{"vg", "shared", "lock_type",
                   "state": started|not-started|lvmlockd-not-running|local|missing|killed,
                   "hosts": [{"host_id", "name", "self",
                              "state": live|failing|dead|free,
                              "silent_seconds", "expires_in_seconds"}],
                   "hosts_error"}],
   "domains": [{"name", "uuid", "state", "active",
                "job": none|migration-out|migration-in|other,
                "managed", "problems",
                "lvs": [{"vg", "lv", "disk", "need": ex|sh, "expected": ex|sh|none,
                         "actual": ex|sh|none|unlocked|unknown, "segtype", "lockspace",
                         "others": {"source": exclusive-here|peers|sanlock|unknown,
                                    "holders": [{"host", "mode", "host_id", "state"}],
                                    "error": why they are unknown},
                         "problems": [code...]}]}]}
New fields may appear in version 1; removing or redefining one changes the
version.`

// helpWidth is the widest line of the problems list in check's description
// (the prose around it wraps at 80; shared-unsupported's line is 84).
const helpWidth = 84

// problemList lists the problem codes worst first, one per line with its
// summary, which wraps at helpWidth under the summaries' column.
func problemList() string {
	col := 0
	for _, k := range check.ProblemTable {
		col = max(col, len(k.Code)+1)
	}
	var b strings.Builder
	for _, k := range check.ProblemTable {
		line := fmt.Sprintf("  %-*s", col, k.Code)
		for i, w := range strings.Fields(k.Summary) {
			if i > 0 && len(line)+1+len(w) > helpWidth {
				b.WriteString(line + "\n")
				line = fmt.Sprintf("  %*s", col, "")
			}
			line += " " + w
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}

func checkCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:        "check",
		Usage:       "show each domain's LV locks on this host and what would break a start or a live migration",
		ArgsUsage:   "DOMAIN... | --all",
		Description: checkDoc,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "all", Usage: "check every domain defined or running on this host"},
			&cli.BoolFlag{Name: "json", Usage: "write the report as JSON (version 1) instead of a table"},
			&cli.StringFlag{Name: "socket", Usage: "libvirtd's UNIX socket (default: daemon.libvirt_socket of the config, its -ro twin when it exists)"},
			&cli.DurationFlag{Name: "timeout", Value: time.Minute, Usage: "give up after this long"},
		},
		Action: func(c *cli.Context) error {
			e.code = exitCannotCheck
			names := c.Args().Slice()
			if c.Bool("all") == (len(names) > 0) {
				return errors.New("check: name the domains to check, or give --all")
			}
			rep, err := runCheck(c, e, names)
			var cfgErr *config.Error
			switch {
			case errors.As(err, &cfgErr):
				// Reported as a problem; nothing else was checked.
				host, _ := os.Hostname()
				rep = check.ConfigInvalidReport(host, time.Now(), cfgErr)
			case err != nil:
				return fmt.Errorf("could not check: %w", err)
			}
			if c.Bool("json") {
				err = rep.WriteJSON(c.App.Writer)
			} else {
				err = rep.WriteTable(c.App.Writer)
			}
			if err != nil {
				return fmt.Errorf("write report: %w", err)
			}
			switch {
			case cfgErr != nil:
				e.code = exitCannotCheck
			case !rep.Healthy:
				e.code = exitFailure
			default:
				e.code = exitOK
			}
			return nil
		},
	}
}

func runCheck(c *cli.Context, e *env, names []string) (*check.Report, error) {
	cfgPath, mustExist := config.Path()
	cfg, err := config.Load(cfgPath, mustExist)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
	defer cancel()

	sock := c.String("socket")
	if sock == "" {
		sock = virt.ReadOnlySocket(cfg.Daemon.LibvirtSocket)
	}
	conn, err := e.dial(ctx, sock)
	if err != nil {
		return nil, err
	}
	defer conn.Close()

	log := newLogger(cfg.LogLevel, e.Stderr, zerolog.WarnLevel)
	checker := &check.Checker{
		Libvirt: conn,
		LVM:     &lvmlock.Client{Runner: lvmlock.ExecRunner{Timeout: cfg.LVMTimeout.D()}, Log: log},
		State:   &state.State{Dir: cfg.StateDir},
		PoolDir: cfg.StoragePoolDir,
		Host:    cfg.HostName(),
	}
	// The peers' lock helpers tell who else holds an LV; with no peer
	// configured, the sanlock leases do.
	if holders := peer.NewHolders(cfg); holders != nil {
		checker.Holders = holders
	}
	checker.Sanlock = &lvmlock.Sanlock{Runner: lvmlock.ExecRunner{Timeout: cfg.LVMTimeout.D()}}
	checker.HostIDs = map[int]string{}
	for _, p := range cfg.Daemon.Peers {
		if name := cfg.Daemon.PeerName(p.HostID); name != "" {
			checker.HostIDs[p.HostID] = name
		}
	}
	return checker.Check(ctx, names)
}
