package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

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

// env is what every command gets: the process's streams and its exit status.
type env struct {
	stdin  io.Reader
	stderr io.Writer
	// code is the exit status a command sets when it is not 0 or 2.
	code int
}

// commands lists the subcommands; each file registers its own in init.
var commands []func(e *env) *cli.Command

// run is the whole program: argv, stdin, stderr in; exit status out.
func run(args []string, stdin io.Reader, stderr io.Writer) int {
	if argv, fromLibvirt, ok := hookInvocation(args); ok {
		return runHook(argv, stdin, stderr, fromLibvirt)
	}
	e := &env{stdin: stdin, stderr: stderr}
	app := newApp(e)
	if err := app.Run(args); err != nil {
		fmt.Fprintf(stderr, "lvhook: %s\n", lvmlock.OneLine(err.Error()))
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
		Writer:         os.Stdout,
		ErrWriter:      e.stderr,
		ExitErrHandler: func(*cli.Context, error) {},
	}
	for _, c := range commands {
		app.Commands = append(app.Commands, c(e))
	}
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
