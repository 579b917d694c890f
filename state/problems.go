package state

import "time"

// ProblemsDir holds, per domain, what the lock helper could not repair:
// problems/UUID.json, written by the lock helper and read by `lvhook check`.
// A file disappears when its domain is healthy again.
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

// Problems reads every problems file. Unreadable files are skipped and
// returned joined in err, one *FileError each; any other error is the
// directory's.
func (s *State) Problems() ([]DomainProblems, error) {
	return allJSON[DomainProblems](s, ProblemsDir)
}

// SaveProblems writes the problems file of dp.UUID, replacing any earlier one.
func (s *State) SaveProblems(dp DomainProblems) error { return s.saveJSON(ProblemsDir, dp.UUID, dp) }

// RemoveProblems deletes the problems file of uuid; none is not an error.
func (s *State) RemoveProblems(uuid string) error { return s.removeJSON(ProblemsDir, uuid) }
