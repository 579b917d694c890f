package main

import (
	"fmt"
	"io"

	"github.com/rs/zerolog"

	"github.com/lvhook/lvhook/hook"
	"github.com/lvhook/lvhook/lvmlock"
)

// hookMayFail tells whether a hook call with these arguments may exit
// non-zero: prepare, migrate and release (hook.MayFail). libvirt kills a
// running guest when reconnect fails, so reconnect, attach, unknown ops and
// the ops lvhook has nothing to do at exit 0 whatever goes wrong, even
// arguments that do not parse. Fewer than two arguments is not libvirt.
func hookMayFail(argv []string) bool {
	if len(argv) < 2 {
		return true
	}
	subop := ""
	if len(argv) > 2 {
		subop = argv[2]
	}
	return hook.MayFail(argv[1], subop)
}

// hookFailCode is the exit status of a hook call that went wrong.
func hookFailCode(mayFail bool) int {
	if mayFail {
		return exitFailure
	}
	return exitOK
}

// logNotFailed records why a call that must not fail did nothing; the config
// may be what is broken, so the logger is the default one (journald, else
// stderr, which libvirt ignores when the hook exits 0).
func logNotFailed(stderr io.Writer, argv []string, err error) {
	log := newLogger("info", stderr, zerolog.WarnLevel)
	ev := log.Error()
	if len(argv) > 0 {
		ev = ev.Str("domain", argv[0])
	}
	if len(argv) > 2 {
		ev = ev.Str("op", argv[1]+" "+argv[2])
	}
	ev.Msg("nothing done, exiting 0 so that libvirt keeps the guest: " + lvmlock.OneLine(err.Error()))
}

// refusal names what a failed call refuses, in front of why.
func refusal(c hook.Call, err error) error {
	switch c.Op {
	case "prepare":
		return fmt.Errorf("refusing to start %s: %w", c.Domain, err)
	case "migrate":
		return fmt.Errorf("refusing incoming migration of %s: %w", c.Domain, err)
	case "release":
		return fmt.Errorf("not deactivating the LVs of %s: %w", c.Domain, err)
	}
	return err
}
