package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/lvhook/lvhook/lvmlock"
)

// State is lvhook's directory of per-host runtime state (default /run/lvhook):
//
//	lock              flock serialising hooks (and the lock helper) on this host
//	incoming/UUID     one-shot marker left by migrate begin (the peer that
//	                  reserved the handover), consumed by prepare
//	domains/UUID.json the LVs lvhook activated for a running domain, and how
//	pending/UUID.json LVs whose deactivation failed, for the lock helper
//	problems/UUID.json what the lock helper could not repair for a domain,
//	                  for `lvhook check` (problems.go)
//	killed/VG.json    what `lvhook kill-vg` did to a VG whose lease storage
//	                  was lost, and killed/VG.lock, its flock (killed.go)
//	evacuating        this host is evacuating (`lvhook evacuate`,
//	                  evacuating.go): its lock helper says draining
type State struct {
	Dir string
	Now func() time.Time
}

// Record is what lvhook holds for one domain on this host.
type Record struct {
	Name string `json:"name"`
	UUID string `json:"uuid"`
	// Incoming is set while the domain runs here as the destination of a
	// live migration that has not yet been confirmed exclusive.
	Incoming bool       `json:"incoming,omitempty"`
	LVs      []RecordLV `json:"lvs"`
	Since    time.Time  `json:"since"`
}

// RecordLV is one LV of a Record and the mode the domain needs when it runs
// here without a migration.
type RecordLV struct {
	VG   string       `json:"vg"`
	LV   string       `json:"lv"`
	Mode lvmlock.Mode `json:"mode"`
}

// Ref returns the LV reference.
func (r RecordLV) Ref() lvmlock.Ref { return lvmlock.Ref{VG: r.VG, LV: r.LV} }

func (s *State) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// validUUID keeps a UUID from naming a path outside the state directory.
func validUUID(u string) error {
	if len(u) < 8 || len(u) > 64 || strings.Trim(u, "0123456789abcdef-") != "" {
		return fmt.Errorf("domain uuid %q is not a UUID", u)
	}
	return nil
}

// Lock takes the host-wide lvhook lock, waiting until ctx ends.
func (s *State) Lock(ctx context.Context) (unlock func(), err error) {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	unlock, err = lockFile(ctx, filepath.Join(s.Dir, "lock"))
	if err != nil && ctx.Err() == nil {
		return nil, fmt.Errorf("state lock: %w", err)
	}
	return unlock, err
}

// lockFile takes an exclusive flock on path (created if needed), waiting
// until ctx ends; unlock releases it.
func lockFile(ctx context.Context, path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, err
	}
	for delay := 10 * time.Millisecond; ; delay = min(delay*2, 250*time.Millisecond) {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, err
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("another lvhook call held %s until the deadline: %w", path, ctx.Err())
		case <-time.After(delay):
		}
	}
}

// Incoming is the marker migrate begin leaves for the prepare that follows
// it in the same libvirt Prepare call: which peer reserved the lock handover
// of this live migration, or why none did.
type Incoming struct {
	At time.Time `json:"at"`
	// Source is the peer whose libvirt had the domain migrating out and
	// which reserved the handover for this host: the only peer prepare may
	// ask to downgrade. Empty when no peer reserved it.
	Source string `json:"source,omitempty"`
	// Refused says why no peer reserved the handover.
	Refused string `json:"refused,omitempty"`
}

// MarkIncoming records that a migration of uuid into this host has begun.
func (s *State) MarkIncoming(uuid string, m Incoming) error {
	if err := validUUID(uuid); err != nil {
		return err
	}
	if m.At.IsZero() {
		m.At = s.now().UTC()
	}
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return WriteFileAtomic(filepath.Join(s.Dir, "incoming", uuid), append(data, '\n'))
}

// TakeIncoming consumes the marker of uuid and returns it when it is younger
// than ttl. An expired marker (an offline migration gets only migrate begin)
// is removed and ignored, as is one lvhook did not write.
func (s *State) TakeIncoming(uuid string, ttl time.Duration) (m Incoming, fresh bool, err error) {
	if err := validUUID(uuid); err != nil {
		return m, false, err
	}
	path := filepath.Join(s.Dir, "incoming", uuid)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return m, false, nil
	}
	if err != nil {
		return m, false, fmt.Errorf("incoming-migration marker: %w", err)
	}
	if err := os.Remove(path); err != nil {
		return m, false, fmt.Errorf("incoming-migration marker: %w", err)
	}
	if json.Unmarshal(data, &m) != nil || m.At.IsZero() {
		return Incoming{}, false, nil
	}
	age := s.now().Sub(m.At)
	return m, age >= 0 && age <= ttl, nil
}

// ClearIncoming removes uuid's marker, if any.
func (s *State) ClearIncoming(uuid string) error {
	if validUUID(uuid) != nil {
		return nil
	}
	err := os.Remove(filepath.Join(s.Dir, "incoming", uuid))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// Save writes the record of a domain in dir (domains or pending).
func (s *State) Save(dir string, r Record) error {
	if r.Since.IsZero() {
		r.Since = s.now().UTC()
	}
	return s.saveJSON(dir, r.UUID, r)
}

// Load reads the record of uuid in dir; ok is false when there is none.
func (s *State) Load(dir, uuid string) (r Record, ok bool, err error) {
	return loadJSON[Record](s, dir, uuid)
}

// Remove deletes the record of uuid in dir.
func (s *State) Remove(dir, uuid string) error { return s.removeJSON(dir, uuid) }

// All reads every record in dir. Unreadable records are skipped and
// returned joined in err (one *FileError each) so that one corrupt file
// does not hide the others.
func (s *State) All(dir string) ([]Record, error) { return allJSON[Record](s, dir) }

// saveJSON writes v as dir/UUID.json.
func (s *State) saveJSON(dir, uuid string, v any) error {
	if err := validUUID(uuid); err != nil {
		return err
	}
	return writeJSON(filepath.Join(s.Dir, dir, uuid+".json"), v)
}

// writeJSON writes v, indented, to path through WriteFileAtomic.
func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileAtomic(path, append(data, '\n'))
}

// loadJSON reads dir/UUID.json; ok is false when there is none.
func loadJSON[T any](s *State, dir, uuid string) (v T, ok bool, err error) {
	if err := validUUID(uuid); err != nil {
		return v, false, err
	}
	return readJSON[T](s, dir, uuid)
}

// readJSON reads dir/KEY.json, whose key the caller checked; ok is false
// when there is none.
func readJSON[T any](s *State, dir, key string) (v T, ok bool, err error) {
	data, err := os.ReadFile(filepath.Join(s.Dir, dir, key+".json"))
	if errors.Is(err, fs.ErrNotExist) {
		return v, false, nil
	}
	if err != nil {
		return v, false, err
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return v, false, fmt.Errorf("state file %s/%s.json: %w", dir, key, err)
	}
	return v, true, nil
}

// removeJSON deletes dir/UUID.json; a missing file is not an error.
func (s *State) removeJSON(dir, uuid string) error {
	if validUUID(uuid) != nil {
		return nil
	}
	err := os.Remove(filepath.Join(s.Dir, dir, uuid+".json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// FileError is the error of one unreadable file of All or Problems: dir/UUID.json.
// Its text is Err's.
type FileError struct {
	Dir string
	// UUID is the file's name without .json, which may not be a UUID.
	UUID string
	Err  error
}

func (e *FileError) Error() string { return e.Err.Error() }

// FileErrors lists the unreadable files of the error of All or Problems.
func FileErrors(err error) []*FileError {
	var out []*FileError
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			out = append(out, FileErrors(e)...)
		}
		return out
	}
	var fe *FileError
	if errors.As(err, &fe) {
		out = append(out, fe)
	}
	return out
}
func (e *FileError) Unwrap() error { return e.Err }

// allJSON reads every UUID.json of dir, skipping the unreadable ones and
// returning their errors (*FileError) joined.
func allJSON[T any](s *State, dir string) ([]T, error) {
	return allFiles(s, dir, func(uuid string) (T, bool, error) { return loadJSON[T](s, dir, uuid) })
}

// allFiles reads every KEY.json of dir with load, skipping the unreadable
// ones and returning their errors (*FileError) joined.
func allFiles[T any](s *State, dir string, load func(key string) (T, bool, error)) ([]T, error) {
	entries, err := os.ReadDir(filepath.Join(s.Dir, dir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []T
	var errs []error
	for _, e := range entries {
		key, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		v, found, err := load(key)
		if err != nil {
			errs = append(errs, &FileError{Dir: dir, UUID: key, Err: err})
			continue
		}
		if found {
			out = append(out, v)
		}
	}
	return out, errors.Join(errs...)
}

// Record directories.
const (
	DomainsDir = "domains"
	PendingDir = "pending"
)

// WriteFileAtomic writes data to path through a temporary file and a rename,
// so that a reader sees the old content or the new one, never a part.
func WriteFileAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
