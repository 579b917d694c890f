package lvmlock

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/lvhook/lvhook/internal/clock"
)

// Client runs lvm and lvmlockctl through a Runner. Every method refuses a VG
// or LV name that ValidName refuses with a *NameError, before it runs anything.
type Client struct {
	Runner Runner
	// DryRun logs the lvchange calls that would change a lock and runs none;
	// queries still run.
	DryRun bool
	// RollbackTimeout bounds the rollback of a failed batch, which runs even
	// when the caller's context has expired.
	RollbackTimeout time.Duration
	Log             zerolog.Logger
}

// Ref names an LV.
type Ref struct{ VG, LV string }

func (r Ref) String() string { return r.VG + "/" + r.LV }

// Target is the mode an LV should have on this host.
type Target struct {
	Ref
	Mode Mode
}

// Change is one LV lock transition made on this host.
type Change struct {
	Ref
	From, To Mode
}

// State is what lvm reports on this host for a set of VGs: every LV with its
// VG's lock type, and the local lock mode of the active ones.
type State struct {
	LVs   map[Ref]LV
	Locks Locks
	// NoModes: lvmlockd was not asked; active LVs of shared VGs are
	// ModeActive.
	NoModes bool
	// MissingVGs lists asked VGs lvm does not know.
	MissingVGs []string

	assumed map[Ref]Mode
}

// Assume returns a State that lvm was not asked for: modes gives what this
// host holds, every other LV is taken as inactive. The hook uses it with what
// its records say other domains hold, sparing an lvs call per event; a wrong
// "inactive" only means a rollback deactivates an LV no domain here uses.
func Assume(modes map[Ref]Mode) *State {
	return &State{assumed: modes}
}

// Mode returns the local mode of r: from lvmlockctl for LVs of shared VGs,
// ex for an active LV of a local VG, none for an inactive or unknown LV.
func (s *State) Mode(r Ref) Mode {
	if s.assumed != nil {
		return s.assumed[r]
	}
	lv, ok := s.LVs[r]
	if !ok || !lv.Active {
		return ModeNone
	}
	if !lv.Shared() {
		return ModeEx
	}
	if s.NoModes {
		return ModeActive
	}
	if m := s.Locks.Mode(r.VG, lv.UUID); m != ModeNone {
		return m
	}
	// Active without a lock: activated before lvmlockd ran, or with
	// --lockopt skiplv. Report it as sh, the weakest claim.
	return ModeSh
}

// run runs one command and turns a failure into an *Error.
func (c *Client) run(ctx context.Context, args ...string) ([]byte, error) {
	stdout, stderr, err := c.Runner.Run(ctx, args[0], args[1:]...)
	if err != nil {
		if extra := reportErrors(stdout); extra != "" {
			stderr = append(append(stderr, '\n'), extra...)
		}
		return stdout, newError(args, stderr, err)
	}
	return stdout, nil
}

// LVs lists the LVs of vgs (all VGs when empty) in one lvs call. VGs lvm does
// not know are returned in missing; the rows of the others are still returned.
func (c *Client) LVs(ctx context.Context, vgs ...string) (lvs []LV, missing []string, err error) {
	for _, vg := range vgs {
		if err := ValidVG(vg); err != nil {
			return nil, nil, err
		}
	}
	// "--": a name is never an option to lvm (see ValidName).
	args := append([]string{"lvs", "--reportformat", "json", "--options", lvsFields, "--"}, vgs...)
	out, runErr := c.run(ctx, args...)
	lvs, parseErr := ParseLVs(out)
	if runErr != nil {
		var e *Error
		if !errors.As(runErr, &e) || e.Kind != KindVGNotFound || parseErr != nil {
			return nil, nil, runErr
		}
		for _, f := range e.Failures {
			if f.Kind == KindVGNotFound {
				missing = append(missing, f.VG)
			}
		}
		return lvs, missing, nil
	}
	return lvs, nil, parseErr
}

// Locks returns this host's lvmlockd state (`lvmlockctl -i`).
//
// lvmlockctl receives lvmlockd's dump on a socket of one fixed name
// (lvmlockctl.c, setup_dump_socket): while another `lvmlockctl -i` runs on the
// host (the lock helper, a hook, lvhook check, an operator) it fails at once,
// printing "socket error -98" (EADDRINUSE) on stdout, exit status 158. Seen on
// the harness with lvm2 2.03.16. Such a failure is tried again, briefly.
func (c *Client) Locks(ctx context.Context) (Locks, error) {
	// No operand: nothing to end options for.
	out, err := c.lockctlDump(ctx, "--info")
	if err != nil {
		return nil, err
	}
	return ParseLockctl(out), nil
}

// lockctlDump runs lvmlockctl with one of its dump flags, trying again
// while another lvmlockctl holds the dump socket.
func (c *Client) lockctlDump(ctx context.Context, flags ...string) ([]byte, error) {
	delay := 20 * time.Millisecond
	for attempt := 0; ; attempt++ {
		out, err := c.run(ctx, append([]string{"lvmlockctl"}, flags...)...)
		if err == nil {
			return out, nil
		}
		if attempt >= lockctlBusyRetries || !bytes.Contains(out, []byte("socket error")) {
			return nil, err
		}
		c.Log.Debug().Err(err).Int("attempt", attempt+1).Msg("lvmlockctl busy; trying again")
		if clock.Sleep(ctx, delay) != nil {
			return nil, err
		}
		delay = min(2*delay, 500*time.Millisecond)
	}
}

// lockctlBusyRetries bounds the tries of a `lvmlockctl -i` that found the dump
// socket in use (about 3 s in all).
const lockctlBusyRetries = 10

// State queries the LVs of vgs and, when modes is set and one of them is
// active here, lvmlockd's lock modes: one lvs call, plus one lvmlockctl call
// if needed. Deactivation needs no modes.
func (c *Client) State(ctx context.Context, modes bool, vgs ...string) (*State, error) {
	lvs, missing, err := c.LVs(ctx, vgs...)
	if err != nil {
		return nil, err
	}
	st := &State{LVs: make(map[Ref]LV, len(lvs)), Locks: Locks{}, MissingVGs: missing, NoModes: !modes}
	needLocks := false
	for _, lv := range lvs {
		st.LVs[Ref{lv.VG, lv.Name}] = lv
		needLocks = needLocks || (modes && lv.Active && lv.Shared())
	}
	if needLocks {
		if st.Locks, err = c.Locks(ctx); err != nil {
			return nil, err
		}
	}
	return st, nil
}

// Activate brings every target to its mode (sh or ex) with one lvchange per
// VG and mode, skipping LVs already in their mode. If any call fails it rolls
// back exactly what this call changed, using st as the state before, and
// returns the failure. On success it returns the changes made.
func (c *Client) Activate(ctx context.Context, st *State, targets []Target) ([]Change, error) {
	// Checked before the first batch: a refusal halfway would need a rollback.
	if err := validRefs(targets); err != nil {
		return nil, err
	}
	var done []Change
	for _, batch := range batches(st, targets) {
		start := time.Now()
		err := c.lvchange(ctx, activationFlag(batch.mode), batch.refs)
		changes := make([]Change, 0, len(batch.refs))
		for _, r := range batch.refs {
			changes = append(changes, Change{Ref: r, From: st.Mode(r), To: batch.mode})
		}
		if err != nil {
			// The failed call may have changed some of its LVs: lvm goes on
			// after a failure and keeps what succeeded.
			c.rollback(ctx, st, append(done, changes...))
			return nil, err
		}
		c.logChanges(changes, time.Since(start))
		done = append(done, changes...)
	}
	return done, nil
}

// Deactivate deactivates refs (-an), one lvchange per VG. With a nil st
// every ref is named (deactivating an inactive LV is a no-op for lvm);
// otherwise only the active ones. Nothing is rolled back: an LV that could
// not be deactivated is named in the *Error.
func (c *Client) Deactivate(ctx context.Context, st *State, refs []Ref) ([]Change, error) {
	if err := validRefs(refs); err != nil {
		return nil, err
	}
	if st == nil {
		st = &State{NoModes: true, assumed: map[Ref]Mode{}}
		for _, r := range refs {
			st.assumed[r] = ModeActive
		}
	}
	byVG := map[string][]Ref{}
	for _, r := range refs {
		if st.Mode(r) != ModeNone {
			byVG[r.VG] = append(byVG[r.VG], r)
		}
	}
	var done []Change
	var errs []error
	for _, vg := range slices.Sorted(maps.Keys(byVG)) {
		start := time.Now()
		err := c.lvchange(ctx, "-an", byVG[vg])
		var e *Error
		known := errors.As(err, &e) && len(e.Failures) > 0
		var changes []Change
		for _, r := range byVG[vg] {
			switch {
			case err == nil:
			case known && e.FailedLV(r.VG, r.LV) || !known:
				continue // not known to be deactivated
			}
			changes = append(changes, Change{Ref: r, From: st.Mode(r), To: ModeNone})
		}
		c.logChanges(changes, time.Since(start))
		done = append(done, changes...)
		if known && onlyNotFound(e) {
			continue // nothing there to deactivate
		}
		errs = append(errs, err)
	}
	return done, errors.Join(errs...)
}

// onlyNotFound reports whether every failure e names is a missing LV or VG.
func onlyNotFound(e *Error) bool {
	for _, f := range e.Failures {
		if f.Kind != KindLVNotFound && f.Kind != KindVGNotFound {
			return false
		}
	}
	return true
}

// SharedOnly is lvchange's selection of LVs in shared (lvmlockd) VGs. lvhook
// never changes the activation of an LV in a local VG: named or not, lvm
// skips it, without a separate query to tell the VGs apart.
const SharedOnly = "vg_shared=1"

func (c *Client) lvchange(ctx context.Context, flag string, refs []Ref) error {
	// The callers checked already; this is the last point before lvm, and
	// "--" keeps a name that slipped past from being read as an option.
	if err := validRefs(refs); err != nil {
		return err
	}
	args := []string{"lvchange", flag, "--select", SharedOnly, "--"}
	for _, r := range refs {
		args = append(args, r.String())
	}
	if c.DryRun {
		c.Log.Info().Str("cmd", strings.Join(args, " ")).Msg("dry run: not running")
		return nil
	}
	_, err := c.run(ctx, args...)
	return err
}

// rollback returns every LV in changes to its mode before the call.
func (c *Client) rollback(ctx context.Context, st *State, changes []Change) {
	timeout := c.RollbackTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	// After a failure the real state is unknown: act on every LV of the
	// failed batch; deactivating an inactive LV or asking the held mode is a
	// no-op for lvm.
	byVG := map[string][]Ref{}
	var back []Target
	for _, ch := range changes {
		if ch.From == ModeNone {
			byVG[ch.VG] = append(byVG[ch.VG], ch.Ref)
		} else {
			back = append(back, Target{Ref: ch.Ref, Mode: ch.From})
		}
	}
	for _, vg := range slices.Sorted(maps.Keys(byVG)) {
		if err := c.lvchange(ctx, "-an", byVG[vg]); err != nil {
			c.Log.Error().Err(err).Str("vg", vg).Msg("rollback failed: LVs may stay active")
		} else {
			for _, r := range byVG[vg] {
				c.Log.Info().Str("vg", r.VG).Str("lv", r.LV).Str("to", "none").Msg("rolled back")
			}
		}
	}
	everything := &State{LVs: map[Ref]LV{}, Locks: Locks{}}
	for _, b := range batches(everything, back) {
		if err := c.lvchange(ctx, activationFlag(b.mode), b.refs); err != nil {
			c.Log.Error().Err(err).Str("vg", b.refs[0].VG).Msg("rollback failed: lock mode not restored")
		}
	}
}

func (c *Client) logChanges(changes []Change, took time.Duration) {
	for _, ch := range changes {
		verb := "activated"
		switch {
		case ch.To == ModeNone:
			verb = "deactivated"
		case ch.From != ModeNone:
			verb = "converted"
		}
		if c.DryRun {
			verb = "dry run: would have " + verb
		}
		c.Log.Info().Str("vg", ch.VG).Str("lv", ch.LV).Stringer("from", ch.From).
			Stringer("to", ch.To).Dur("took", took).Msg(verb)
	}
}

// activationFlag is lvchange's option for a mode: -aey, -asy or -an.
func activationFlag(m Mode) string {
	switch m {
	case ModeEx:
		return "-aey"
	case ModeSh:
		return "-asy"
	}
	return "-an"
}

type batch struct {
	mode Mode
	refs []Ref
}

// batches groups the targets not already in their mode by VG and mode, in a
// stable order (VG name, then ex before sh).
func batches(st *State, targets []Target) []batch {
	type key struct {
		vg   string
		mode Mode
	}
	groups := map[key][]Ref{}
	for _, t := range targets {
		if st.Mode(t.Ref) == t.Mode {
			continue
		}
		k := key{t.VG, t.Mode}
		if !slices.Contains(groups[k], t.Ref) {
			groups[k] = append(groups[k], t.Ref)
		}
	}
	keys := make([]key, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b key) int {
		return cmp.Or(cmp.Compare(a.vg, b.vg), cmp.Compare(a.mode, b.mode))
	})
	out := make([]batch, 0, len(keys))
	for _, k := range keys {
		out = append(out, batch{mode: k.mode, refs: groups[k]})
	}
	return out
}
