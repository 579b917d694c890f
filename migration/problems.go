package migration

import (
	"slices"

	"github.com/lvhook/lvhook/state"
)

// publish writes the problems found for the domains examined (every domain
// when only is nil) and removes the files of those that have none left.
func (h *Helper) publish(only []string, found map[string][]state.Problem, names map[string]string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.problems == nil {
		h.problems = map[string][]state.Problem{}
		// Files of an earlier run are judged again by this one, the
		// unreadable ones too: rewritten or removed when their domain is
		// next examined (a full pass examines every one).
		old, err := h.State.Problems()
		for _, dp := range old {
			h.problems[dp.UUID] = dp.Problems
		}
		for _, fe := range state.FileErrors(err) {
			h.Log.Warn().Err(fe).Str("uuid", fe.UUID).Msg("unreadable problems file: replaced at the domain's next examination")
			h.problems[fe.UUID] = []state.Problem{{What: "unreadable problems file"}}
		}
		if err != nil && len(state.FileErrors(err)) == 0 {
			h.Log.Warn().Err(err).Msg("cannot read the problems files")
		}
	}
	examined := only
	if only == nil {
		for u := range h.problems {
			examined = append(examined, u)
		}
	}
	for u := range found {
		if !slices.Contains(examined, u) {
			examined = append(examined, u)
		}
	}
	slices.Sort(examined)
	for _, u := range slices.Compact(examined) {
		probs := found[u]
		if slices.Equal(probs, h.problems[u]) {
			continue
		}
		if len(probs) == 0 {
			if err := h.State.RemoveProblems(u); err != nil {
				h.Log.Warn().Err(err).Msg("cannot remove problems file")
			}
			delete(h.problems, u)
			continue
		}
		for _, p := range probs {
			h.Log.Warn().Str("domain", names[u]).Str("uuid", u).Str("vg", p.VG).Str("lv", p.LV).Str("problem", p.What).
				Msg("cannot repair")
		}
		dp := state.DomainProblems{Name: names[u], UUID: u, Host: h.Host, Checked: h.now().UTC(), Problems: probs}
		if err := h.State.SaveProblems(dp); err != nil {
			h.Log.Warn().Err(err).Msg("cannot write problems file")
			continue
		}
		h.problems[u] = probs
	}
}
