package state

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestEvacuatingMarker(t *testing.T) {
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	s := &State{Dir: filepath.Join(t.TempDir(), "run"), Now: func() time.Time { return now }}
	if on, err := s.Evacuating(); on || err != nil {
		t.Fatalf("Evacuating() before any mark = %v, %v", on, err)
	}
	if err := s.ClearEvacuating(); err != nil {
		t.Errorf("ClearEvacuating without a marker: %v", err)
	}
	if err := s.MarkEvacuating(Evacuation{PID: 42, AtShutdown: true}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(s.Dir, "evacuating"))
	if want := `{"since":"2026-11-22T10:00:00Z","pid":42,"at_shutdown":true}` + "\n"; err != nil || string(data) != want {
		t.Errorf("marker = %q, %v; want %q", data, err, want)
	}
	if on, err := s.Evacuating(); !on || err != nil {
		t.Errorf("Evacuating() after the mark = %v, %v", on, err)
	}
	// Whatever the file holds, it marks the host as draining.
	if err := os.WriteFile(filepath.Join(s.Dir, "evacuating"), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if on, err := s.Evacuating(); !on || err != nil {
		t.Errorf("Evacuating() with a foreign marker = %v, %v", on, err)
	}
	if err := s.ClearEvacuating(); err != nil {
		t.Fatal(err)
	}
	if on, err := s.Evacuating(); on || err != nil {
		t.Errorf("Evacuating() after the clear = %v, %v", on, err)
	}
}
