package lvmlock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/lvhook/lvhook/internal/clock"
)

// Joining a shared VG's lockspace at boot. lvm2's lvmlocks.service runs
// `vgchange --lock-start --lock-opt auto` and exits 0 even when a start
// failed (tools/vgchange.c logs the wait's failure but does not return it),
// and nothing orders it before libvirtd; a start can also fail at once with
// a transient EARGS right after lvmlockd started (lvmlockd.md). StartLockspaces
// is what the boot unit runs instead: it verifies every start and retries the
// transient failures, bounded by ctx.

// SharedVGs lists the VGs lvm sees whose lock type is not none (sanlock, dlm,
// idm), sorted. A shared VG whose lockspace is not started is listed too: lvm
// reads it without a lock.
func (c *Client) SharedVGs(ctx context.Context) ([]string, error) {
	out, err := c.run(ctx, "vgs", "--reportformat", "json", "--options", "vg_name,vg_lock_type")
	if err != nil {
		return nil, err
	}
	return parseSharedVGs(out)
}

func parseSharedVGs(out []byte) ([]string, error) {
	var r jsonReport
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, fmt.Errorf("decode vgs json report: %w", err)
	}
	var vgs []string
	for _, rep := range r.Report {
		for _, row := range rep.VG {
			if t := row["vg_lock_type"]; t != "" && t != "none" && row["vg_name"] != "" {
				vgs = append(vgs, row["vg_name"])
			}
		}
	}
	slices.Sort(vgs)
	return slices.Compact(vgs), nil
}

// StartLockspace runs `vgchange --lock-start VG`, which returns once the
// start is done or failed (it waits for a start already in progress too). Its
// exit status is not trusted: LockspaceStarted says whether it worked.
func (c *Client) StartLockspace(ctx context.Context, vg string) error {
	if err := ValidVG(vg); err != nil {
		return err
	}
	// A scan of storage that hangs must not outlast the caller's bound
	// (kill-vg --recover runs it on a host that lost its lease storage).
	_, err := c.runBounded(ctx, "vgchange", "--lock-start", "--", vg)
	return err
}

// LockspaceStarted reports whether vg's lockspace is joined here: lvmlockd
// lists it (`lvmlockctl -i`, which lists it from the start's beginning) and,
// for a sanlock VG, sanlock has it with no ADD or REM suffix (joined).
func (c *Client) LockspaceStarted(ctx context.Context, s Sanlock, vg string) (bool, error) {
	locks, err := c.Locks(ctx)
	if err != nil {
		return false, err
	}
	ls := locks[vg]
	if ls == nil {
		return false, nil
	}
	if ls.LockType != "sanlock" {
		return true, nil
	}
	spaces, err := s.Lockspaces(ctx)
	if err != nil {
		return false, err
	}
	_, joined := spaces[LockspaceName(vg)]
	return joined, nil
}

// LockStartTransient reports whether a failed lock start may work when tried
// again: lvmlockd's EARGS ("invalid parameters for sanlock", right after
// lvmlockd or sanlock started), the lock manager not running yet, a start
// in progress, and a start that ran but did not join (the host's lease of
// before a crash not yet expired: sanlock takes it back after ~140 s).
func LockStartTransient(err error) bool {
	var e *Error
	if errors.As(err, &e) && e.Kind == KindLockStartFailed {
		r := e.Reason()
		return strings.Contains(r, "invalid parameters for") || strings.Contains(r, "lock manager") && strings.Contains(r, "is not running")
	}
	return errors.Is(err, ErrNotJoined) || IsLockspaceStarting(err) || IsLockManagerError(err)
}

// firstStartRetry is the pause after the first failed try, doubled after
// each (tests shorten it).
var firstStartRetry = 2 * time.Second

// ErrNotJoined is a lock start that reported no error but left the lockspace
// unjoined.
var ErrNotJoined = errors.New("vgchange --lock-start returned but the lockspace is not joined")

// StartAttempt is one try of StartLockspaces, for the caller's log.
type StartAttempt struct {
	VG      string
	Attempt int
	Err     error // nil: started
	Took    time.Duration
}

// StartLockspaces starts each VG's lockspace that is not already joined and
// verifies it, retrying transient failures after 2, 4, 8 ... 30 s until ctx
// ends. It returns the VGs still not started, with the last error of each;
// report, if not nil, sees every attempt. Several VGs are first asked of
// lvmlockd together, in one vgchange, so that their joins run side by side
// (after a crash each waits about 160 s for the host's old lease); then each
// is verified, and retried, in turn.
func (c *Client) StartLockspaces(ctx context.Context, s Sanlock, vgs []string, report func(StartAttempt)) map[string]error {
	failed := map[string]error{}
	var valid []string
	for _, vg := range vgs {
		if err := ValidVG(vg); err != nil {
			failed[vg] = err
		} else {
			valid = append(valid, vg)
		}
	}
	if len(valid) > 1 {
		// Its outcome is read per VG below.
		_, _ = c.run(ctx, append([]string{"vgchange", "--lock-start", "--"}, valid...)...)
	}
	for _, vg := range valid {
		if err := c.startOne(ctx, s, vg, report); err != nil {
			failed[vg] = err
		}
	}
	return failed
}

func (c *Client) startOne(ctx context.Context, s Sanlock, vg string, report func(StartAttempt)) error {
	delay := firstStartRetry
	for attempt := 1; ; attempt++ {
		start := time.Now()
		ok, err := c.LockspaceStarted(ctx, s, vg)
		if err == nil && ok {
			if attempt == 1 {
				return nil // already joined: nothing to report
			}
		} else if err == nil {
			err = c.StartLockspace(ctx, vg)
			if err == nil {
				if ok, err = c.LockspaceStarted(ctx, s, vg); err == nil && !ok {
					err = ErrNotJoined
				}
			}
		}
		if report != nil {
			report(StartAttempt{VG: vg, Attempt: attempt, Err: err, Took: time.Since(start)})
		}
		if err == nil {
			return nil
		}
		if !LockStartTransient(err) || ctx.Err() != nil {
			return err
		}
		if clock.Sleep(ctx, delay) != nil {
			return err
		}
		delay = min(2*delay, 30*time.Second)
	}
}
