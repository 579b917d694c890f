package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/lvhook/lvhook/config"
	"github.com/lvhook/lvhook/domxml"
	"github.com/lvhook/lvhook/hook"
	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/peer"
	"github.com/lvhook/lvhook/state"
	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"
)

func hookCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "hook",
		Usage:     "run as libvirt's qemu hook (what libvirtd does through /etc/libvirt/hooks/qemu.d/lvhook)",
		ArgsUsage: "DOMAIN OP SUBOP [EXTRA]  (domain XML on stdin)",
		Action: func(c *cli.Context) error {
			e.code = runHook(c.Args().Slice(), e.Stdin, e.Stderr, false)
			return nil
		},
	}
}

// runHook is one libvirt hook call. Nothing is ever written to stdout: for
// migrate and restore libvirt would take it as a replacement domain XML.
// Failures print one line on stderr, which libvirt shows the operator.
func runHook(argv []string, stdin io.Reader, stderr io.Writer, fromLibvirt bool) (code int) {
	if fromLibvirt {
		// Give libvirt its EOF on stdout now, and make sure nothing below
		// (a library, a panic handler) can ever write there.
		if devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0); err == nil {
			_ = syscall.Dup3(int(devnull.Fd()), 1, 0)
			devnull.Close()
		}
	}
	// Only prepare, migrate and release may fail (hookfail.go): a failed
	// reconnect makes libvirt kill the running guest.
	mayFail := hookMayFail(argv)
	defer func() {
		if p := recover(); p != nil {
			if !mayFail {
				logNotFailed(stderr, argv, fmt.Errorf("panic: %v", p))
				code = exitOK
				return
			}
			// One line for libvirt to show, not a stack trace; a start
			// refused this way left its intent record, which release
			// end and the lock helper carry out.
			fmt.Fprintf(stderr, "lvhook: internal error, nothing more done (see journalctl -t lvhook): %s\n", lvmlock.OneLine(fmt.Sprint(p)))
			code = exitFailure
		}
	}()
	fail := func(err error) int {
		if !mayFail {
			logNotFailed(stderr, argv, err)
			return exitOK
		}
		fmt.Fprintf(stderr, "lvhook: %s\n", lvmlock.OneLine(err.Error()))
		return exitFailure
	}
	call, err := parseHookArgs(argv)
	if err != nil {
		return fail(err)
	}
	cfgPath, mustExist := config.Path()
	cfg, err := config.Load(cfgPath, mustExist)
	if err != nil {
		// Nothing is done with a config lvhook cannot fully use, not
		// even a verification with the defaults: another state_dir.
		return fail(refusal(call, err))
	}
	log := newLogger(cfg.LogLevel, stderr, zerolog.Disabled)

	// libvirt waits for the hook without a limit; the hook bounds itself.
	// The hard stop covers the rollback, which outlives ctx by design.
	budget := hookBudget(cfg, call)
	hard := budget + cfg.RollbackTimeout.D() + 2*time.Second
	timer := time.AfterFunc(hard, func() {
		fmt.Fprintf(stderr, "lvhook: %s %s %s: no answer within %s; giving up (see journalctl -t lvhook)\n",
			call.Op, call.SubOp, call.Domain, hard)
		os.Exit(hookFailCode(mayFail))
	})
	defer timer.Stop()
	// SIGTERM, SIGINT or SIGHUP (libvirtd stopping, a tired operator)
	// end the call like its timeout: lvm commands are killed and what they
	// activated is rolled back, instead of an orphaned lvchange finishing
	// after the hook is gone.
	sigCtx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer stop()
	ctx, cancel := context.WithTimeout(sigCtx, budget)
	defer cancel()

	xmlData, err := domxml.Read(stdin)
	if err != nil {
		return fail(refusal(call, err))
	}
	h := newHook(cfg, log)
	if err := h.Run(ctx, call, xmlData); err != nil {
		return fail(err)
	}
	return exitOK
}

// hookBudget bounds a hook call: hook_timeout, and for a start (prepare
// begin) the lockspace_wait it may spend waiting for a lockspace that is
// still starting (at boot, or while an operator starts it).
func hookBudget(cfg config.Config, call hook.Call) time.Duration {
	if call.Op == "prepare" && call.SubOp == "begin" {
		return cfg.HookTimeout.D() + cfg.LockspaceWait.D()
	}
	return cfg.HookTimeout.D()
}

func newHook(cfg config.Config, log zerolog.Logger) *hook.Hook {
	h := &hook.Hook{
		Config: cfg,
		LVM: &lvmlock.Client{
			Runner:          lvmlock.ExecRunner{Timeout: cfg.LVMTimeout.D()},
			DryRun:          cfg.DryRun,
			RollbackTimeout: cfg.RollbackTimeout.D(),
			Log:             log,
		},
		State:    &state.State{Dir: cfg.StateDir},
		Log:      log,
		HostName: cfg.Daemon.PeerName,
		Sanlock:  &lvmlock.Sanlock{Runner: lvmlock.ExecRunner{Timeout: cfg.LVMTimeout.D()}},
	}
	if len(cfg.Daemon.Peers) > 0 {
		// The destination of a live migration asks the source's lock
		// helper to downgrade; certificates are read only then.
		h.Handover = peer.NewHandover(cfg, log)
	}
	return h
}

// parseHookArgs checks libvirt's argv: DOMAIN OP SUBOP EXTRA.
func parseHookArgs(argv []string) (hook.Call, error) {
	if len(argv) < 3 {
		return hook.Call{}, fmt.Errorf("hook needs DOMAIN OP SUBOP [EXTRA], got %d argument(s)", len(argv))
	}
	for _, a := range argv {
		if a == "" || strings.ContainsAny(a, "\x00\n") {
			return hook.Call{}, errors.New("hook arguments must be non-empty single-line words")
		}
	}
	c := hook.Call{Domain: argv[0], Op: argv[1], SubOp: argv[2], Extra: "-"}
	if len(argv) > 3 {
		c.Extra = argv[3]
	}
	return c, nil
}
