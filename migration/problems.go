package migration

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/lvhook/lvhook/hook"
)

// ProblemsDir is the state directory's subdirectory where the lock helper
// leaves, per domain, what it could not repair: problems/UUID.json. `lvhook
// check` reads it; a file disappears when its domain is healthy again.
const ProblemsDir = "problems"

// Problem is one thing the lock helper cannot repair, about one LV or the
// whole domain (VG and LV empty).
type Problem struct {
	VG   string `json:"vg,omitempty"`
	LV   string `json:"lv,omitempty"`
	What string `json:"what"`
}

// DomainProblems is the content of one problems file.
type DomainProblems struct {
	Name     string    `json:"name"`
	UUID     string    `json:"uuid"`
	Host     string    `json:"host"`
	Checked  time.Time `json:"checked"`
	Problems []Problem `json:"problems"`
}

// ReadProblems returns every problems file of the state directory.
func ReadProblems(stateDir string) ([]DomainProblems, error) {
	dir := filepath.Join(stateDir, ProblemsDir)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []DomainProblems
	var errs []error
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var dp DomainProblems
		if err := json.Unmarshal(data, &dp); err != nil {
			errs = append(errs, fmt.Errorf("problems file %s: %w", e.Name(), err))
			continue
		}
		out = append(out, dp)
	}
	return out, errors.Join(errs...)
}

// publish writes the problems found for the domains examined (every domain
// when only is nil) and removes the files of those that have none left.
func (h *Helper) publish(only []string, found map[string][]Problem, names map[string]string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.problems == nil {
		h.problems = map[string][]Problem{}
		// Files of an earlier run are judged again by this one.
		if old, err := ReadProblems(h.State.Dir); err == nil {
			for _, dp := range old {
				h.problems[dp.UUID] = dp.Problems
			}
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
		path := filepath.Join(h.State.Dir, ProblemsDir, u+".json")
		if len(probs) == 0 {
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				h.Log.Warn().Err(err).Msg("cannot remove problems file")
			}
			delete(h.problems, u)
			continue
		}
		for _, p := range probs {
			h.Log.Warn().Str("domain", names[u]).Str("uuid", u).Str("vg", p.VG).Str("lv", p.LV).Str("problem", p.What).
				Msg("cannot repair")
		}
		data, _ := json.MarshalIndent(DomainProblems{Name: names[u], UUID: u, Host: h.Host, Checked: h.now().UTC(), Problems: probs}, "", "  ")
		if err := hook.WriteFileAtomic(path, append(data, '\n')); err != nil {
			h.Log.Warn().Err(err).Msg("cannot write problems file")
			continue
		}
		h.problems[u] = probs
	}
}
