package check

// The problems `lvhook check` reports: their codes, their rank, and their
// documentation, in one table. `lvhook check --help` (and lvhook(8)) lists
// the codes from it; the operator guide's table is written by hand and
// compared with it by the tests (TestProblemTableGuide).

// Problem codes. They are stable: tools match them. Each has a row in
// ProblemTable (TestProblemTableCodes).
const (
	ProblemConfigInvalid       = "config-invalid"
	ProblemVGKilled            = "vg-killed"
	ProblemHeldElsewhere       = "held-elsewhere"
	ProblemHostNotRenewing     = "host-not-renewing"
	ProblemAutostartRefused    = "autostart-refused"
	ProblemActiveUnlocked      = "active-unlocked"
	ProblemNotLocked           = "not-locked"
	ProblemStaleActivation     = "stale-activation"
	ProblemSharedAfterMigrate  = "sh-after-migration"
	ProblemLvmlockdNotRunning  = "lvmlockd-not-running"
	ProblemLockspaceNotStarted = "lockspace-not-started"
	ProblemLVMissing           = "lv-missing"
	ProblemVGMissing           = "vg-missing"
	ProblemDomainUnreadable    = "domain-unreadable"
	ProblemPendingDeactivation = "pending-deactivation"
	ProblemHelperCannotRepair  = "helper-cannot-repair"
	ProblemModeMismatch        = "mode-mismatch"
	ProblemSharedUnsupported   = "shared-unsupported"
	ProblemVGNotShared         = "vg-not-shared"
)

// ProblemKind documents one problem code. The advice of each problem found
// is written where it is found, with what was found.
type ProblemKind struct {
	Code string
	// Summary is the code's line in `lvhook check --help`: plain text, one
	// line (the help wraps it).
	Summary string
	// Meaning and Action are the code's row in the operator guide's table,
	// in Markdown.
	Meaning, Action string
}

// ProblemTable lists every problem code, worst first: a report lists its
// problems in this order.
var ProblemTable = []ProblemKind{
	{ProblemConfigInvalid,
		"the config file cannot be used (file and key named); nothing else is checked, exit status 2",
		"`/etc/lvhook/lvhook.toml` cannot be used; nothing else was checked",
		"fix the key the message names; until then starts are refused here"},
	{ProblemVGKilled,
		"this host lost the VG's lease storage and lvhook kill-vg killed the VG here: its domains were stopped, none starts here until it is recovered",
		"this host lost the VG's lease storage; `lvhook kill-vg` replaced its LVs' tables here by the error target and destroyed its domains (the message: when, which domains, what is still open); starts of its domains are refused here",
		"stop what still holds a device open, then, once the storage is back, `lvhook kill-vg --recover VG`; start its domains here after that, or on another host once this host's lease is dead there (`host-not-renewing`, `dead`)"},
	{ProblemHeldElsewhere,
		"the domain runs here and another host holds its LV",
		"the domain runs here and another host holds its LV",
		"find the second copy (`virsh list` on that host) or its failed deactivation; `lvchange -an vg/lv` there once it is stopped"},
	{ProblemAutostartRefused,
		"a domain set to autostart was refused at its start here and does not run",
		"a domain set to autostart (`virsh autostart`) does not run here: lvhook refused its start (at boot, its LVs held by another host, or its lockspace not joined); libvirt does not try again",
		"if it runs on the host the message names, leave it there (`virsh autostart --disable` here); else stop it there, then `virsh start` here"},
	{ProblemHostNotRenewing,
		"another host stopped renewing its sanlock host lease",
		"another host has not renewed its sanlock host lease for 60 s or more (crashed, hung, or cut off from the storage); the message lists the checked LVs it holds and about how long until its locks may be taken",
		"make sure that host is down (power it off if unsure); once the time is up (`state: dead` in `--json`), start its domains on one host with `virsh start`"},
	{ProblemActiveUnlocked,
		"LV active here without an lvmlockd lock",
		"LV active here without an lvmlockd lock (activated before lvmlockd ran, or with `--lockopt skiplv`)",
		"stop the domain, `lvchange -an`, start it again"},
	{ProblemNotLocked,
		"the domain runs here, its LV is not active here",
		"the domain runs here but its LV is not active here",
		"it was activated some other way or the lock was lost: `lvchange -aey vg/lv`"},
	{ProblemStaleActivation,
		"LV active here, its domain runs nowhere here",
		"LV active here, its domain does not run here: no other host can start it",
		"check the open count (`dmsetup info -c`), then `lvchange -an vg/lv`"},
	{ProblemSharedAfterMigrate,
		"LV sh where the running domain needs ex",
		"the running domain holds sh where it needs ex",
		"the lock helper converts it once the other host dropped its sh; by hand `lvchange -aey vg/lv`"},
	{ProblemLvmlockdNotRunning,
		"lvmlockd is not running here",
		"lvmlockd is not running here: no LV of a shared VG can be activated or checked here",
		"`systemctl start lvmlockd`, then `vgchange --lock-start`"},
	{ProblemLockspaceNotStarted,
		"the VG's lockspace is not started here",
		"the VG's lockspace is not joined here",
		"`vgchange --lock-start VG`, then `lvmlockctl -i`"},
	{ProblemLVMissing,
		"the disk's LV does not exist",
		"the disk's LV does not exist",
		"fix the domain XML or the storage"},
	{ProblemVGMissing,
		"the disk's VG is not visible here",
		"the disk's VG is not visible here",
		"fix the domain XML or the storage"},
	{ProblemDomainUnreadable,
		"the domain XML or its storage pool cannot be read",
		"its XML or storage pool file cannot be read",
		"see the message"},
	{ProblemPendingDeactivation,
		"a deactivation at stop failed and is not done yet",
		"a deactivation at stop failed (LV still open)",
		"the lock helper retries; find the opener with `dmsetup info -c` / `fuser`"},
	{ProblemHelperCannotRepair,
		"the lock helper reports what it cannot repair",
		"the lock helper (`lvhook.service`) cannot repair something of this domain or LV: the message gives its reason and when it found it; or check cannot read the file where the lock helper writes it",
		"`journalctl -u lvhook DOMAIN=name` says more; fix what it names, and the lock helper drops it at its next pass"},
	{ProblemModeMismatch,
		"LV ex where the domain needs only sh",
		"LV ex where the domain needs only sh",
		"harmless for this domain; other users of the shareable LV cannot start"},
	{ProblemSharedUnsupported,
		"thin, raid, cache, snapshot or origin LV: no live migration",
		"thin, raid, cache, snapshot or origin LV",
		"the domain runs, but cannot be live-migrated (below)"},
	{ProblemVGNotShared,
		"LV of a local VG: no lock protects it",
		"LV of a local VG",
		"no lock protects it: `vgchange --lock-type sanlock VG`"},
}

// problemRank is each code's place in ProblemTable.
var problemRank = func() map[string]int {
	rank := make(map[string]int, len(ProblemTable))
	for i, k := range ProblemTable {
		rank[k.Code] = i
	}
	return rank
}()

// rankOf is code's rank, worst first. A code missing from ProblemTable
// (which the tests forbid) comes first: a problem nobody ranked is not
// hidden at the end of the list.
func rankOf(code string) int {
	if r, ok := problemRank[code]; ok {
		return r
	}
	return -1
}
