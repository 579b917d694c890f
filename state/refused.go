package state

import "time"

// RefusedDir holds, per domain, the last start lvhook refused on this host:
// refused/UUID.json, written by the prepare hook and removed by the next
// start that succeeds. `lvhook check` reads it to report a domain libvirt
// autostarted at boot and lvhook refused (libvirt tries an autostart once).
const RefusedDir = "refused"

// Refused is a refused start: the line libvirt showed, and when.
type Refused struct {
	Name string    `json:"name"`
	UUID string    `json:"uuid"`
	Line string    `json:"line"`
	At   time.Time `json:"at"`
}

// SaveRefused records a refused start of r.UUID, at now.
func (s *State) SaveRefused(r Refused) error {
	r.At = s.now()
	return s.saveJSON(RefusedDir, r.UUID, r)
}

// RemoveRefused deletes the record of uuid; none is not an error.
func (s *State) RemoveRefused(uuid string) error { return s.removeJSON(RefusedDir, uuid) }

// AllRefused reads every record, skipping unreadable ones (returned joined
// in err, one *FileError each).
func (s *State) AllRefused() ([]Refused, error) { return allJSON[Refused](s, RefusedDir) }
