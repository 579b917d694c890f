package lvmlock

import (
	"context"
	"errors"
	"time"
)

// Convert changes the lock mode of LVs already active on this host, one
// lvchange per VG and mode, and never activates one: a target that st shows
// inactive is skipped. Unlike Activate it rolls nothing back: lvm keeps what
// succeeded in a partly failed call, and for the lock helper's sh -> ex that
// is progress, while a rollback would drop LVs it just made ex back to sh.
// It returns the changes known done and the failures joined.
func (c *Client) Convert(ctx context.Context, st *State, targets []Target) ([]Change, error) {
	if err := validRefs(targets); err != nil {
		return nil, err
	}
	var active []Target
	for _, t := range targets {
		if st.Mode(t.Ref) != ModeNone {
			active = append(active, t)
		}
	}
	var done []Change
	var errs []error
	for _, b := range batches(st, active) {
		start := time.Now()
		err := c.lvchange(ctx, activationFlag(b.mode), b.refs)
		var changes []Change
		for _, r := range b.refs {
			if convertedDespite(err, r) {
				changes = append(changes, Change{Ref: r, From: st.Mode(r), To: b.mode})
			}
		}
		c.logChanges(changes, time.Since(start))
		done = append(done, changes...)
		errs = append(errs, err)
	}
	return done, errors.Join(errs...)
}

// convertedDespite reports whether r is known converted after an lvchange
// that returned err: yes without error, or when stderr names LVs one by one
// and not r. A failure naming only a VG, or none, leaves every LV unknown.
func convertedDespite(err error, r Ref) bool {
	if err == nil {
		return true
	}
	var e *Error
	if !errors.As(err, &e) || len(e.Failures) == 0 {
		return false
	}
	for _, f := range e.Failures {
		if f.LV == "" || f.VG == r.VG && f.LV == r.LV {
			return false
		}
	}
	return true
}
