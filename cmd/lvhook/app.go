package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"

	"github.com/lvhook/lvhook/killvg"
	"github.com/lvhook/lvhook/lvmlock"
	"github.com/urfave/cli/v2"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit statuses, decided here only.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// Streams are the process's standard streams.
type Streams struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// env is what every command gets: the streams, the connections to libvirtd
// (check's read-only one, evacuate's and kill-vg's read-write ones) and its
// exit status. Tests replace the connections, kill-vg's commands (runner,
// nil: run them) and its parent's name (parent, nil: /proc).
type env struct {
	Streams
	dial         func(ctx context.Context, sock string) (checkConn, error)
	dialEvacuate func(ctx context.Context, sock string) (evacuateConn, error)
	dialRW       func(ctx context.Context, sock string) (killvg.Libvirt, error)
	runner       lvmlock.Runner
	parent       func() string
	// code is the exit status a command sets when it is not 0 or 2.
	code int
}

// commands lists the subcommands, in the order of lvhook --help.
func commands(e *env) []*cli.Command {
	return []*cli.Command{checkCommand(e), daemonCommand(e), evacuateCommand(e), hookCommand(e), killVGCommand(e), lockspacesCommand(e), manCommand(e), completionCommand(e)}
}

// Run is the whole program: argv and streams in, exit status out.
func Run(args []string, s Streams) int {
	return (&env{Streams: s, dial: dialLibvirt, dialEvacuate: dialEvacuate, dialRW: dialLibvirtRW}).run(args)
}

func (e *env) run(args []string) int {
	if argv, fromLibvirt, ok := hookInvocation(args); ok {
		return runHook(argv, e.Stdin, e.Stderr, fromLibvirt)
	}
	app := newApp(e)
	if err := app.Run(args); err != nil {
		fmt.Fprintf(e.Stderr, "lvhook: %s\n", lvmlock.OneLine(err.Error()))
		if e.code != exitOK {
			return e.code
		}
		return exitUsage
	}
	return e.code
}

// newApp builds the command line; also used to generate the man page.
func newApp(e *env) *cli.App {
	app := &cli.App{
		Name:           "lvhook",
		Usage:          "keep a libvirt domain's LVs locked by lvmlockd on the host that runs it",
		Version:        version,
		Writer:         e.Stdout,
		ErrWriter:      e.Stderr,
		ExitErrHandler: func(*cli.Context, error) {},
	}
	app.Commands = commands(e)
	return app
}

// hookInvocation returns the hook's arguments, DOMAIN OP SUBOP [EXTRA], when
// args is a hook call: argv[0] is libvirt's hook (fromLibvirt), or the
// command is `lvhook hook [--] DOMAIN OP SUBOP [EXTRA]`. The command line
// parser never sees these: a domain may be named -h, --help, help or
// --version. Only `lvhook hook -h` or `--help` alone is left to it, for help.
func hookInvocation(args []string) (argv []string, fromLibvirt, ok bool) {
	switch {
	case len(args) == 0:
		return nil, false, false
	case isHookPath(args[0]):
		return args[1:], true, true
	case len(args) < 2 || args[1] != "hook":
		return nil, false, false
	}
	rest := args[2:]
	switch {
	case len(rest) > 0 && rest[0] == "--":
		return rest[1:], false, true
	case len(rest) == 1 && (rest[0] == "-h" || rest[0] == "--help"):
		return nil, false, false
	}
	return rest, false, true
}

// isHookPath tells whether argv[0] is libvirt's hook: /etc/libvirt/hooks/qemu
// or any file in a hooks/qemu.d directory.
func isHookPath(argv0 string) bool {
	dir, base := filepath.Split(argv0)
	return base == "qemu" && filepath.Base(filepath.Clean(dir)) == "hooks" ||
		filepath.Base(filepath.Clean(dir)) == "qemu.d"
}
