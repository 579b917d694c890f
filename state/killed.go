package state

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/lvhook/lvhook/lvmlock"
)

// KilledDir holds, per VG, what `lvhook kill-vg` did when this host lost the
// VG's lease storage: killed/VG.json, from the start of the first kill-vg
// run until `lvhook kill-vg --recover VG`, and killed/VG.lock, the flock
// that serialises the runs of one VG (sanlock starts the kill command about
// once a second until one succeeds). The record is written without the
// host-wide lock, which a hook stuck in lvm on the lost storage may hold
// for lvm_timeout, and replaced whole by rename: hooks, the lock helper and
// check read it without a lock.
const KilledDir = "killed"

// Killed is the record of one VG killed on this host.
type Killed struct {
	VG string `json:"vg"`
	// Started is when the first kill-vg run of this loss began; Finished
	// when the last run ended (zero while one runs).
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished,omitzero"`
	// Runs counts the kill-vg runs of this loss.
	Runs int `json:"runs"`
	// Wiped lists the devices whose table kill-vg replaced by the error
	// target; Left the devices of the VG that could still be written when
	// it finished, with why.
	Wiped []string       `json:"wiped"`
	Left  []KilledDevice `json:"left"`
	// Domains are the domains of this host that used the VG, and what
	// their destroy gave.
	Domains []KilledDomain `json:"domains"`
	// Verified: when the last run finished, no device of the VG could be
	// written (every one has the error target, or there is none). Only
	// then does lvmlockctl drop the VG's locks.
	Verified bool `json:"verified"`
}

// KilledDevice is a device of a killed VG that may still be written.
type KilledDevice struct {
	Name string `json:"name"`
	Why  string `json:"why"`
}

// KilledDomain is a domain that used a killed VG.
type KilledDomain struct {
	Name      string `json:"name"`
	UUID      string `json:"uuid"`
	Destroyed bool   `json:"destroyed"`
	Error     string `json:"error,omitempty"`
}

// SaveKilled writes k's record, replacing any earlier one.
func (s *State) SaveKilled(k Killed) error {
	if err := lvmlock.ValidVG(k.VG); err != nil {
		return err
	}
	return writeJSON(filepath.Join(s.Dir, KilledDir, k.VG+".json"), k)
}

// LoadKilled reads vg's record; ok is false when there is none. An
// unreadable record is an error: callers take the VG as killed.
func (s *State) LoadKilled(vg string) (k Killed, ok bool, err error) {
	if err := lvmlock.ValidVG(vg); err != nil {
		return k, false, err
	}
	return readJSON[Killed](s, KilledDir, vg)
}

// AllKilled reads every record. Unreadable records are skipped and
// returned joined in err, one *FileError each, whose UUID is the VG name.
func (s *State) AllKilled() ([]Killed, error) {
	return allFiles(s, KilledDir, s.LoadKilled)
}

// KilledVGs returns the VGs killed on this host, by name: every record's,
// an unreadable one's too (its time unknown), so that a corrupt record
// never lets lvm touch a VG that may be dead here. err is the directory's.
func (s *State) KilledVGs() (map[string]Killed, error) {
	recs, err := s.AllKilled()
	out := make(map[string]Killed, len(recs))
	for _, k := range recs {
		out[k.VG] = k
	}
	for _, fe := range FileErrors(err) {
		if lvmlock.ValidName(fe.UUID) {
			out[fe.UUID] = Killed{VG: fe.UUID}
		}
	}
	if len(FileErrors(err)) > 0 {
		err = nil
	}
	return out, err
}

// RemoveKilled deletes vg's record; none is not an error.
func (s *State) RemoveKilled(vg string) error {
	if err := lvmlock.ValidVG(vg); err != nil {
		return err
	}
	err := os.Remove(filepath.Join(s.Dir, KilledDir, vg+".json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// LockKilled takes the flock of vg's kill-vg runs, waiting until ctx ends.
func (s *State) LockKilled(ctx context.Context, vg string) (unlock func(), err error) {
	if err := lvmlock.ValidVG(vg); err != nil {
		return nil, err
	}
	dir := filepath.Join(s.Dir, KilledDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	return lockFile(ctx, filepath.Join(dir, vg+".lock"))
}
