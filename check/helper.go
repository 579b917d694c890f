package check

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/state"
	"github.com/lvhook/lvhook/virt"
)

// helperProblems reports what the lock helper could not repair, as it wrote
// it in the state directory (problems/UUID.json, one file per domain), for
// the checked domains: the selected ones, or with all every file, of a
// domain libvirt lists or not. A file check cannot read is reported for its
// domain (named by the file); a problems directory it cannot read, for the
// host: what the lock helper reported is then unknown.
func (ev *evaluation) helperProblems() {
	selected, all := ev.selected, ev.all
	if ev.State == nil {
		return
	}
	listed := func(uuid string) (virt.Listed, bool) {
		i := slices.IndexFunc(selected, func(d virt.Listed) bool { return strings.EqualFold(d.UUID, uuid) })
		if i < 0 {
			return virt.Listed{}, false
		}
		return selected[i], true
	}
	files, err := ev.helperFiles, ev.helperErr
	for _, dp := range files {
		d, ok := listed(dp.UUID)
		if !ok && !all {
			continue
		}
		name := cmp.Or(d.Name, dp.Name)
		// The lock helper rewrites the file when what it finds changes:
		// this is when it found them as they are.
		found := dp.Checked.UTC().Format(time.RFC3339)
		for _, p := range dp.Problems {
			what := name
			if p.LV != "" {
				what = p.VG + "/" + p.LV
				ev.lvProblem(dp.UUID, lvmlock.Ref{VG: p.VG, LV: p.LV}, ProblemHelperCannotRepair)
			}
			ev.add(Problem{Code: ProblemHelperCannotRepair, Domain: name, UUID: strings.ToLower(dp.UUID), VG: p.VG, LV: p.LV,
				Message: fmt.Sprintf("the lock helper cannot repair %s: %s (found at %s)", what, lvmlock.OneLine(p.What), found),
				Advice: fmt.Sprintf("`journalctl -u lvhook DOMAIN=%s` says more; fix what it names and the lock helper drops this at its next pass, if it runs (`systemctl status lvhook`)",
					name)})
		}
	}
	if err == nil {
		return
	}
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	for _, err := range errs {
		var fe *state.FileError
		if !errors.As(err, &fe) {
			ev.add(Problem{Code: ProblemHelperCannotRepair,
				Message: fmt.Sprintf("the lock helper's problems directory cannot be read (%s): what it could not repair is unknown", lvmlock.OneLine(err.Error())),
				Advice:  fmt.Sprintf("check the state directory %s (state_dir); the lock helper's journal has what it could not repair: `journalctl -u lvhook -g 'cannot repair'`", ev.State.Dir)})
			continue
		}
		d, ok := listed(fe.UUID)
		if !ok && !all {
			continue
		}
		ev.add(Problem{Code: ProblemHelperCannotRepair, Domain: d.Name, UUID: cmp.Or(strings.ToLower(d.UUID), fe.UUID),
			Message: fmt.Sprintf("the lock helper's problems file cannot be read (%s): what it could not repair here is unknown", lvmlock.OneLine(fe.Error())),
			Advice:  "the lock helper's journal has what it could not repair (`journalctl -u lvhook -g 'cannot repair'`); only lvhook writes these files: remove this one"})
	}
}

// lvProblem adds code to the problems of the LV ref of domain uuid, when the
// report lists it, once.
func (ev *evaluation) lvProblem(uuid string, ref lvmlock.Ref, code string) {
	for i := range ev.rep.Domains {
		d := &ev.rep.Domains[i]
		if !strings.EqualFold(d.UUID, uuid) {
			continue
		}
		for j := range d.LVs {
			l := &d.LVs[j]
			if l.VG == ref.VG && l.LV == ref.LV && !slices.Contains(l.Problems, code) {
				l.Problems = append(l.Problems, code)
			}
		}
	}
}
