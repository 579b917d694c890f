package hook

// The event -> action table: what lvhook does for each libvirt hook call, in
// the order libvirt makes them (https://libvirt.org/hooks.html). An op that is
// not listed, such as one a future libvirt adds, is verified like reconnect:
// logged, compared, never failed.

type action int

const (
	// doNothing: nothing to do, nothing printed.
	doNothing action = iota
	// doMarkIncoming: first call on the destination of a migration. Activate
	// nothing (an offline migration gets only this call); leave a one-shot
	// marker that tells the next prepare it is an incoming live migration.
	doMarkIncoming
	// doActivate: prepare begin. Normal start or restore: -aey every LV,
	// roll back and refuse on any failure. With a fresh marker (incoming
	// live migration): -asy, never ex, after the source's downgrade.
	doActivate
	// doDeactivate: release end, the last call of every stop (shutdown,
	// destroy, crash, save, migration away, failed start): -an every LV not
	// used by another domain here. Failures are logged and left to the lock
	// helper; libvirt ignores them anyway.
	doDeactivate
	// doVerify: reconnect (libvirtd restarted while the domain runs) and
	// attach. A failure here kills the guest: only compare and log, never
	// fail, never change a lock.
	doVerify
)

type event struct{ op, subop string }

var table = map[event]action{
	{"migrate", "begin"}:   doMarkIncoming,
	{"restore", "begin"}:   doNothing, // the following prepare does the work
	{"prepare", "begin"}:   doActivate,
	{"start", "begin"}:     doNothing,
	{"started", "begin"}:   doNothing, // on a destination: before any memory is copied
	{"stopped", "end"}:     doNothing,
	{"release", "end"}:     doDeactivate,
	{"reconnect", "begin"}: doVerify,
	{"attach", "begin"}:    doVerify,
}

func actionFor(op, subop string) action {
	if a, ok := table[event{op, subop}]; ok {
		return a
	}
	for e := range table {
		if e.op == op {
			return doNothing // a known op at a stage lvhook has no use for
		}
	}
	return doVerify
}

func (a action) String() string {
	return [...]string{"nothing", "mark incoming migration", "activate", "deactivate", "verify"}[a]
}

// MayFail tells whether the hook call op subop may exit non-zero when
// something goes wrong before its work starts (a config file lvhook cannot
// use, an unreadable XML): only where lvhook has work whose failure libvirt
// survives, prepare, migrate and release. Reconnect, attach and unknown ops
// only verify, and libvirt kills a running guest when reconnect fails; at
// the other ops lvhook has nothing to do.
func MayFail(op, subop string) bool {
	switch actionFor(op, subop) {
	case doActivate, doMarkIncoming, doDeactivate:
		return true
	}
	return false
}
