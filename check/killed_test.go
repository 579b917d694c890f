package check

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/lvmlock/lvmfake"
	"github.com/lvhook/lvhook/state"
)

// vgKilled: kvm1 lost vg1's lease storage 3 minutes ago and kill-vg killed
// it: mig was destroyed, old could not be (its QEMU holds its LV open on
// the error table); lvmlockd dropped vg1. web runs on vg0, healthy. A
// failed release of another domain left a pending deactivation in vg1.
func vgKilled(w *checkWorld) {
	w.domain("web", "running", JobNone, "vg0/web-root")
	w.hold(1, "vg0", "web-root", lvmlock.ModeEx)
	w.domain("mig", "shutoff", JobNone, "vg1/mig-root")
	old := w.domain("old", "running", JobNone, "vg1/old-root")
	w.hold(1, "vg1", "mig-root", lvmlock.ModeEx)
	w.hold(1, "vg1", "old-root", lvmlock.ModeEx)
	w.lvm.Do(func(c *lvmfake.Cluster) {
		c.Open[1][lvmlock.Ref{VG: "vg1", LV: "old-root"}] = true
		c.Wiped[1] = map[string]bool{"vg1-mig--root": true, "vg1-old--root": true}
	})
	w.lvm.Kill(1, "vg1")
	w.lvm.Drop(1, "vg1")
	started := checkNow.Add(-3 * time.Minute)
	if err := w.state.SaveKilled(state.Killed{VG: "vg1", Started: started, Finished: started.Add(4 * time.Second), Runs: 3,
		Wiped: []string{"vg1-mig--root", "vg1-old--root"}, Verified: true,
		Domains: []state.KilledDomain{{Name: "mig", UUID: "00000002-1111-4222-8333-000000000002", Destroyed: true},
			{Name: "old", UUID: old.UUID, Error: "Failed to terminate process 4242 with SIGKILL: Device or resource busy"}}}); err != nil {
		w.t.Fatal(err)
	}
	if err := w.state.Save(state.PendingDir, state.Record{Name: "gone", UUID: "99999999-1111-4222-8333-999999999999",
		LVs: []state.RecordLV{{VG: "vg1", LV: "left-root"}}, Since: started.Add(-time.Hour)}); err != nil {
		w.t.Fatal(err)
	}
}

// A killed VG is one problem, counted on its domains, whose LVs get no
// other; lvm and sanlock are not asked about it.
func TestCheckVGKilled(t *testing.T) {
	w := newCheckWorld(t)
	w.sanlock = true
	vgKilled(w)
	w.lvm.ResetCalls()
	rep, err := w.checker().Check(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"vg-killed  vg1/"}, problemKeys(rep)); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
	p := rep.Problems[0]
	for _, want := range []string{"VG vg1 lost its lease storage and lvhook kill-vg killed it on this host at 2026-11-22T09:57:00Z",
		"every device of it has the error table (2 replaced)", "domains stopped: mig",
		"not stopped, running on error disks: old (Failed to terminate process 4242", "still open: vg1-old--root (1)"} {
		if !strings.Contains(p.Message, want) {
			t.Errorf("message %q lacks %q", p.Message, want)
		}
	}
	if !strings.Contains(p.Advice, "lvhook kill-vg --recover vg1") {
		t.Errorf("advice %q", p.Advice)
	}
	for _, d := range rep.Domains {
		if want := map[string]int{"mig": 1, "old": 1}[d.Name]; d.Problems != want {
			t.Errorf("%s counts %d problems, want %d", d.Name, d.Problems, want)
		}
	}
	for _, c := range w.lvm.Calls(1) {
		if strings.Contains(c, "vg1") || strings.HasPrefix(c, "lvs") && !strings.HasSuffix(c, "-- vg0") {
			t.Errorf("ran %q: vg1 is killed", c)
		}
	}
	var table, js bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	golden(t, "vg-killed.txt", table.Bytes())
	golden(t, "vg-killed.json", js.Bytes())
}

// What the message says of a kill still running, one that could not make
// every device unwritable, and a record check cannot read.
func TestCheckVGKilledStates(t *testing.T) {
	started := checkNow.Add(-10 * time.Second)
	for _, tc := range []struct {
		name  string
		write func(w *checkWorld)
		want  string
	}{
		{"running", func(w *checkWorld) {
			if err := w.state.SaveKilled(state.Killed{VG: "vg1", Started: started, Runs: 1}); err != nil {
				w.t.Fatal(err)
			}
		}, "at 2026-11-22T09:59:50Z; kill-vg is still running; no domain here used it"},
		{"not verified", func(w *checkWorld) {
			if err := w.state.SaveKilled(state.Killed{VG: "vg1", Started: started, Finished: started.Add(25 * time.Second),
				Left: []state.KilledDevice{{Name: "vg1-old--root", Why: "gave up waiting for it (it may be blocked in the kernel): context deadline exceeded"}}}); err != nil {
				w.t.Fatal(err)
			}
		}, "kill-vg could not make every device unwritable (vg1-old--root: gave up waiting for it (it may be blocked in the kernel): context deadline exceeded): lvmlockd keeps the VG's locks"},
		{"unreadable", func(w *checkWorld) {
			if err := os.MkdirAll(filepath.Join(w.state.Dir, state.KilledDir), 0o700); err != nil {
				w.t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(w.state.Dir, state.KilledDir, "vg1.json"), []byte("{"), 0o600); err != nil {
				w.t.Fatal(err)
			}
		}, "VG vg1 was killed on this host by lvhook kill-vg (its lease storage lost), but its record cannot be read (state file killed/vg1.json: unexpected end of JSON input)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newCheckWorld(t)
			w.domain("old", "shutoff", JobNone, "vg1/old-root")
			tc.write(w)
			rep, err := w.checker().Check(context.Background(), nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Problems) != 1 || rep.Problems[0].Code != ProblemVGKilled || !strings.Contains(rep.Problems[0].Message, tc.want) {
				t.Errorf("problems %+v\nwant one vg-killed with %q", rep.Problems, tc.want)
			}
		})
	}
}
