package lvmlock

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

// Kind classifies why an lvm or lvmlockctl command failed. lvm exits with
// status 5 for every runtime failure, so the kind comes from stderr (LC_ALL=C).
type Kind int

const (
	KindOther Kind = iota
	// KindLockedByOtherHost: another host holds a conflicting LV lock.
	KindLockedByOtherHost
	// KindIncompatibleMode: this host holds the LV sh and ex was asked.
	KindIncompatibleMode
	// KindLockspaceNotStarted: the VG's lockspace is not joined on this host.
	KindLockspaceNotStarted
	// KindLockspaceStarting: the lockspace is being joined; retry shortly.
	KindLockspaceStarting
	// KindLvmlockdNotRunning: lvmlockd is not running on this host.
	KindLvmlockdNotRunning
	// KindVGNotFound: no such volume group.
	KindVGNotFound
	// KindLVNotFound: no such logical volume.
	KindLVNotFound
	// KindStorageFailed: sanlock cannot reach the lease storage.
	KindStorageFailed
	// KindInUse: the LV is open (deactivation refused).
	KindInUse
	// KindSharedNotSupported: the LV type cannot be activated sh.
	KindSharedNotSupported
	// KindTimeout: the command did not finish in time and was killed.
	KindTimeout
	// KindNotInstalled: the command is not in PATH.
	KindNotInstalled
	// KindLockManagerError: lvmlockd's lock manager failed a VG lock with an
	// error code ("VG vg lock skipped: error -221", ELMERR): sanlock under
	// I/O pressure, for one; retrying may succeed.
	KindLockManagerError
	// KindLockStartFailed: a lock start (vgchange --lock-start) failed;
	// LockStartTransient tells the failures worth another try.
	KindLockStartFailed
)

var kindNames = map[Kind]string{
	KindOther:               "failed",
	KindLockedByOtherHost:   "LV locked by other host",
	KindIncompatibleMode:    "LV already locked with incompatible mode",
	KindLockspaceNotStarted: "lockspace not started",
	KindLockspaceStarting:   "lockspace start in progress",
	KindLvmlockdNotRunning:  "lvmlockd not running",
	KindVGNotFound:          "volume group not found",
	KindLVNotFound:          "logical volume not found",
	KindStorageFailed:       "lease storage failed",
	KindInUse:               "LV in use",
	KindSharedNotSupported:  "shared activation not supported for this LV type",
	KindTimeout:             "timed out",
	KindNotInstalled:        "command not found",
	KindLockManagerError:    "lock manager error",
	KindLockStartFailed:     "lock start failed",
}

func (k Kind) String() string { return kindNames[k] }

// Failure is one LV (or VG) named in a failed command's stderr.
type Failure struct {
	Kind   Kind
	VG, LV string
	// HostID is the sanlock host_id of the holder when lvm reports it
	// (lvm >= 2.03.24 with sanlock >= 4 appends "(host_id N)"), else 0.
	HostID int
}

// Error is a failed command: its printable command line, exit status, stderr
// and classification. Callers decide on it with the Is* predicates.
type Error struct {
	Args     []string
	ExitCode int
	Stderr   string
	Kind     Kind
	// Failures lists every LV or VG stderr names, in order; may be empty.
	Failures []Failure
	Err      error
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: %s", strings.Join(e.Args, " "), e.Reason())
}

func (e *Error) Unwrap() error { return e.Err }

// Reason is the most useful line of stderr, or the inner error.
func (e *Error) Reason() string {
	var lines []string
	for _, l := range strings.Split(e.Stderr, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "WARNING: Extending") {
			continue
		}
		lines = append(lines, l)
	}
	// The first line names the cause; lvm's follow-ups ("Failed to lock
	// logical volume ...") repeat it less precisely.
	if len(lines) > 0 && e.Kind != KindTimeout && e.Kind != KindNotInstalled {
		if e.Kind == KindLvmlockdNotRunning {
			return "lvmlockd process is not running"
		}
		return strings.TrimSuffix(lines[0], ".")
	}
	if e.Err != nil {
		return e.Err.Error()
	}
	return fmt.Sprintf("exit status %d", e.ExitCode)
}

// Holder returns the sanlock host_id lvm reported for vg/lv, or 0.
func (e *Error) Holder(vg, lv string) int {
	for _, f := range e.Failures {
		if f.VG == vg && f.LV == lv {
			return f.HostID
		}
	}
	return 0
}

// FailedLV reports whether stderr names vg/lv as failed.
func (e *Error) FailedLV(vg, lv string) bool {
	for _, f := range e.Failures {
		if f.VG == vg && f.LV == lv {
			return true
		}
	}
	return false
}

// KindOf returns the Kind of the first *Error in err's chain, or KindOther.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return KindTimeout
	}
	return KindOther
}

func IsLockedByOtherHost(err error) bool   { return KindOf(err) == KindLockedByOtherHost }
func IsIncompatibleMode(err error) bool    { return KindOf(err) == KindIncompatibleMode }
func IsLockspaceNotStarted(err error) bool { return KindOf(err) == KindLockspaceNotStarted }
func IsLockspaceStarting(err error) bool   { return KindOf(err) == KindLockspaceStarting }
func IsLockManagerError(err error) bool    { return KindOf(err) == KindLockManagerError }
func IsLvmlockdNotRunning(err error) bool  { return KindOf(err) == KindLvmlockdNotRunning }
func IsVGNotFound(err error) bool          { return KindOf(err) == KindVGNotFound }
func IsLVNotFound(err error) bool          { return KindOf(err) == KindLVNotFound }
func IsNotFound(err error) bool            { k := KindOf(err); return k == KindVGNotFound || k == KindLVNotFound }
func IsStorageFailed(err error) bool       { return KindOf(err) == KindStorageFailed }
func IsInUse(err error) bool               { return KindOf(err) == KindInUse }
func IsSharedNotSupported(err error) bool  { return KindOf(err) == KindSharedNotSupported }
func IsTimeout(err error) bool             { return KindOf(err) == KindTimeout }

// Transient reports whether retrying the same command may succeed.
func Transient(err error) bool {
	switch KindOf(err) {
	case KindLockspaceStarting, KindLockedByOtherHost, KindIncompatibleMode, KindLockManagerError:
		return true
	}
	return false
}

// Patterns for lvm 2.03.x messages (lib/locking/lvmlockd.c, lib/metadata,
// tools/). Order matters: the first pattern that matches a line wins, and the
// command's Kind is taken from the most specific line.
var patterns = []struct {
	kind Kind
	re   *regexp.Regexp
}{
	{KindLockedByOtherHost, regexp.MustCompile(`LV locked by other host: ([^/\s]+)/(\S+?)(?: \(host_id (\d+)\))?$`)},
	{KindIncompatibleMode, regexp.MustCompile(`LV is already locked with incompatible mode: ([^/\s]+)/(\S+)$`)},
	{KindSharedNotSupported, regexp.MustCompile(`Shared activation not compatible with LV type \S* of ([^/\s]+)/(\S+)$`)},
	{KindLvmlockdNotRunning, regexp.MustCompile(`lvmlockd process is not running|Cannot connect to lvmlockd|lvmlockd connection is required|lock failed: lvmlockd is required`)},
	{KindLockspaceStarting, regexp.MustCompile(`VG (\S+) lock (?:skipped|failed): lock start in progress`)},
	// lockd_start_vg (lib/locking/lvmlockd.c): "VG vg0 start failed:
	// invalid parameters for sanlock" (EARGS), "... lock manager sanlock is
	// not running", "... invalid sanlock host_id, set in lvmlocal.conf".
	{KindLockStartFailed, regexp.MustCompile(`VG (\S+) start failed: `)},
	// lvmlockd's own codes (lvmlockd-client.h): ENOLS 210 not started,
	// ESTARTING 211, EVGKILLED 217 / ELOCKIO 218 / EDEVOPEN 220 lease
	// storage, ELMERR 221 and the rest lock manager errors. Before the
	// generic "Cannot access VG ... due to failed lock" that follows them.
	{KindLockspaceNotStarted, regexp.MustCompile(`VG (\S+) lock (?:skipped|failed): error -?210$`)},
	{KindLockspaceStarting, regexp.MustCompile(`VG (\S+) lock (?:skipped|failed): error -?211$`)},
	{KindStorageFailed, regexp.MustCompile(`VG (\S+) lock (?:skipped|failed): error -?(?:217|218|220)$`)},
	{KindLockManagerError, regexp.MustCompile(`VG (\S+) lock (?:skipped|failed): error -?\d+$`)},
	{KindStorageFailed, regexp.MustCompile(`(?:LV ([^/\s]+)/(\S+) lock failed: (?:storage \S+ for sanlock leases|io timeout))|storage failed for sanlock leases`)},
	{KindLockspaceNotStarted, regexp.MustCompile(`Cannot access VG (\S+) due to failed lock|LV ([^/\s]+)/(\S+) lock failed: lockspace is inactive`)},
	{KindLVNotFound, regexp.MustCompile(`Failed to find logical volume "([^/"]+)/([^"]+)"`)},
	{KindVGNotFound, regexp.MustCompile(`Volume group "([^"]+)" not found`)},
	{KindInUse, regexp.MustCompile(`Logical volume ([^/\s]+)/(\S+?) (?:in use|contains a filesystem in use)`)},
}

// classify reads stderr into a Kind and the LVs it names.
func classify(stderr string) (Kind, []Failure) {
	kind := KindOther
	var failures []Failure
	best := len(patterns)
	for _, line := range strings.Split(stderr, "\n") {
		line = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(line), "."))
		for i, p := range patterns {
			m := p.re.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			if i < best {
				best, kind = i, p.kind
			}
			f := Failure{Kind: p.kind}
			switch p.kind {
			case KindVGNotFound:
				f.VG = m[1]
			case KindLockspaceStarting, KindLockManagerError, KindLockStartFailed:
				f.VG = m[1]
			case KindLockspaceNotStarted:
				f.VG = m[1]
				if len(m) > 3 {
					f.VG, f.LV = cmp.Or(m[1], m[2]), m[3]
				}
			case KindLvmlockdNotRunning:
			default:
				switch {
				case len(m) == 2: // a VG lock: "VG vg lock skipped: error -N"
					f.VG = m[1]
				case len(m) > 2:
					f.VG, f.LV = m[1], m[2]
				}
				if len(m) > 3 && m[3] != "" && p.kind == KindLockedByOtherHost {
					f.HostID, _ = strconv.Atoi(m[3])
				}
			}
			if f.VG != "" || f.LV != "" {
				failures = append(failures, f)
			}
			break
		}
	}
	return kind, failures
}

// newError builds the *Error for a command that failed with err.
func newError(args []string, stderr []byte, err error) *Error {
	e := &Error{Args: args, Stderr: string(stderr), Err: err, ExitCode: -1}
	var exitErr interface{ ExitCode() int }
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
		e.Kind = KindTimeout
	case errors.Is(err, exec.ErrNotFound):
		e.Kind = KindNotInstalled
	default:
		if errors.As(err, &exitErr) {
			e.ExitCode = exitErr.ExitCode()
		}
		e.Kind, e.Failures = classify(e.Stderr)
	}
	return e
}
