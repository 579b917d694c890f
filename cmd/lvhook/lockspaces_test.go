package main

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lvhook/lvhook/state"
)

// A VG kill-vg killed here is not started by `lvhook lockspaces`: its
// recovery checks the devices first.
func TestLockspacesSkipsKilledVG(t *testing.T) {
	e := newHookEnv(t)
	st := &state.State{Dir: filepath.Join(e.dir, "state")}
	if err := st.SaveKilled(state.Killed{VG: "vg0", Started: time.Date(2026, 12, 2, 11, 41, 30, 0, time.UTC), Verified: true}); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := e.run(binary, nil, nil, "lockspaces", "vg0")
	if code != exitFailure {
		t.Errorf("exit %d, want %d (stdout %q)", code, exitFailure, stdout)
	}
	want := "lvhook lockspaces: vg0: killed by lvhook kill-vg at 2026-12-02T11:41:30Z (its lease storage was lost); not started: recover it with `lvhook kill-vg --recover vg0`"
	if !strings.Contains(stderr, want) {
		t.Errorf("stderr %q, want %q", stderr, want)
	}
	if slices.ContainsFunc(e.calls(), func(c string) bool { return strings.HasPrefix(c, "vgchange") }) {
		t.Errorf("calls %q: a killed VG was started", e.calls())
	}
}

// An option as a VG name is refused before anything runs.
func TestLockspacesRefusesOptionNames(t *testing.T) {
	e := newHookEnv(t)
	_, stderr, code := e.run(binary, nil, nil, "lockspaces", "--", "--config=x")
	if code != exitUsage || !strings.Contains(stderr, `"--config=x" is not a valid volume group name`) || len(e.calls()) != 0 {
		t.Errorf("exit %d, stderr %q, calls %q", code, stderr, e.calls())
	}
}
