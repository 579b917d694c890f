package state

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const uuidA = "3f1d2c4b-5a69-4e7f-8a1b-2c3d4e5f6a7b"

// The lock helper writes a problems file, check reads it back as written,
// and removing it leaves none; a corrupt file is reported, not hidden.
func TestProblemsRoundTrip(t *testing.T) {
	s := &State{Dir: t.TempDir()}
	dp := DomainProblems{Name: "vm1", UUID: uuidA, Host: "kvm1", Checked: time.Date(2026, 12, 2, 7, 0, 0, 0, time.UTC),
		Problems: []Problem{{VG: "vg0", LV: "a", What: "LV not found"}, {What: "no record"}}}
	if err := s.SaveProblems(dp); err != nil {
		t.Fatal(err)
	}
	got, err := s.Problems()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]DomainProblems{dp}, got); diff != "" {
		t.Errorf("Problems (-want +got):\n%s", diff)
	}
	bad := filepath.Join(s.Dir, ProblemsDir, "0a1b2c3d-0000-4000-8000-000000000000.json")
	if err := os.WriteFile(bad, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err = s.Problems()
	if err == nil || len(got) != 1 {
		t.Errorf("with a corrupt file: %d read, err %v; want the good one and an error", len(got), err)
	}
	// The error names the file's domain, for check to report it there.
	var fe *FileError
	if !errors.As(err, &fe) || fe.Dir != ProblemsDir || fe.UUID != "0a1b2c3d-0000-4000-8000-000000000000" ||
		err.Error() != "state file problems/0a1b2c3d-0000-4000-8000-000000000000.json: unexpected end of JSON input" {
		t.Errorf("corrupt file's error: %v (%#v), want a *FileError naming problems/ and its UUID", err, fe)
	}
	if err := s.RemoveProblems(uuidA); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveProblems(uuidA); err != nil {
		t.Errorf("removing twice: %v", err)
	}
	if _, err := os.Stat(filepath.Join(s.Dir, ProblemsDir, uuidA+".json")); !os.IsNotExist(err) {
		t.Errorf("problems file still there after RemoveProblems: %v", err)
	}
}

// A UUID that is not one (from a forged record or XML) never names a path.
func TestProblemsRefuseBadUUID(t *testing.T) {
	s := &State{Dir: t.TempDir()}
	for _, u := range []string{"../escape", "", "a/b", "3f1d2c4b-5a69-4e7f-8a1b-2c3d4e5f6a7b/.."} {
		if err := s.SaveProblems(DomainProblems{UUID: u}); err == nil {
			t.Errorf("SaveProblems(%q) = nil, want an error", u)
		}
	}
	if entries, _ := os.ReadDir(s.Dir); len(entries) != 0 {
		t.Errorf("state dir has %d entries after refused writes", len(entries))
	}
}
