package state

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// evacuatingFile marks this host as evacuating: while it exists, the lock
// helper answers the peers' capacity questions with draining, and their
// evacuations send it nothing.
const evacuatingFile = "evacuating"

// Evacuation is what the marker records, for an operator who finds it.
type Evacuation struct {
	Since time.Time `json:"since"`
	PID   int       `json:"pid"`
	// AtShutdown: the host is shutting down; the marker stays until the
	// state directory (a tmpfs) goes.
	AtShutdown bool `json:"at_shutdown,omitempty"`
}

// MarkEvacuating writes the marker.
func (s *State) MarkEvacuating(e Evacuation) error {
	if e.Since.IsZero() {
		e.Since = s.now().UTC()
	}
	data, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return WriteFileAtomic(filepath.Join(s.Dir, evacuatingFile), append(data, '\n'))
}

// ClearEvacuating removes the marker, if any.
func (s *State) ClearEvacuating() error {
	err := os.Remove(filepath.Join(s.Dir, evacuatingFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// Evacuating tells whether the marker exists. Its content is not read: a
// marker lvhook did not write, or a torn one, still means draining.
func (s *State) Evacuating() (bool, error) {
	_, err := os.Lstat(filepath.Join(s.Dir, evacuatingFile))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, err
}
