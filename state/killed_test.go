package state

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lvhook/lvhook/lvmlock"
)

// kill-vg writes a record, the hook, the lock helper and check read it
// back as written, recover removes it; a corrupt record still counts as a
// killed VG.
func TestKilledRoundTrip(t *testing.T) {
	s := &State{Dir: t.TempDir()}
	k := Killed{VG: "vg0", Started: time.Date(2026, 12, 2, 7, 0, 0, 0, time.UTC), Runs: 2,
		Finished: time.Date(2026, 12, 2, 7, 0, 3, 0, time.UTC), Wiped: []string{"vg0-a", "vg0-pool-tpool"},
		Left:    []KilledDevice{{Name: "vg0-b", Why: "wipe_table timed out"}},
		Domains: []KilledDomain{{Name: "vm1", UUID: uuidA, Destroyed: true}, {Name: "vm2", UUID: uuidA, Error: "libvirt did not answer"}}}
	if err := s.SaveKilled(k); err != nil {
		t.Fatal(err)
	}
	got, ok, err := s.LoadKilled("vg0")
	if err != nil || !ok {
		t.Fatalf("LoadKilled = %v, %v", ok, err)
	}
	if diff := cmp.Diff(k, got); diff != "" {
		t.Errorf("LoadKilled (-want +got):\n%s", diff)
	}
	if _, ok, err := s.LoadKilled("vg1"); ok || err != nil {
		t.Errorf("LoadKilled(vg1) = %v, %v; want none", ok, err)
	}
	if err := os.WriteFile(filepath.Join(s.Dir, KilledDir, "vg9.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	all, err := s.AllKilled()
	if len(all) != 1 || len(FileErrors(err)) != 1 || FileErrors(err)[0].UUID != "vg9" {
		t.Errorf("AllKilled = %v, %v; want vg0 and vg9's error", all, err)
	}
	vgs, err := s.KilledVGs()
	if err != nil || len(vgs) != 2 || vgs["vg0"].Runs != 2 || vgs["vg9"].VG != "vg9" {
		t.Errorf("KilledVGs = %v, %v; want vg0's record and vg9 (unreadable) as killed", vgs, err)
	}
	if err := s.RemoveKilled("vg0"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.LoadKilled("vg0"); ok {
		t.Error("record still there after RemoveKilled")
	}
	if err := s.RemoveKilled("vg0"); err != nil {
		t.Errorf("RemoveKilled of none = %v", err)
	}
}

// A VG name never names a path outside the directory, nor an option.
func TestKilledRefusesBadNames(t *testing.T) {
	s := &State{Dir: t.TempDir()}
	for _, vg := range []string{"..", "../lock", "-ffoo", "vg0 --x", ""} {
		if err := s.SaveKilled(Killed{VG: vg}); !lvmlock.IsInvalidName(err) {
			t.Errorf("SaveKilled(%q) = %v", vg, err)
		}
		if _, _, err := s.LoadKilled(vg); !lvmlock.IsInvalidName(err) {
			t.Errorf("LoadKilled(%q) = %v", vg, err)
		}
		if _, err := s.LockKilled(context.Background(), vg); !lvmlock.IsInvalidName(err) {
			t.Errorf("LockKilled(%q) = %v", vg, err)
		}
	}
}

// One kill-vg run of a VG at a time: the second waits for the first, and
// gives up at its deadline; another VG is not held up.
func TestLockKilled(t *testing.T) {
	s := &State{Dir: t.TempDir()}
	unlock, err := s.LockKilled(context.Background(), "vg0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := s.LockKilled(ctx, "vg0"); err == nil {
		t.Fatal("a second run took the lock of vg0 while the first held it")
	}
	other, err := s.LockKilled(context.Background(), "vg1")
	if err != nil {
		t.Fatalf("vg1 held up by vg0: %v", err)
	}
	other()
	got := make(chan error, 1)
	go func() {
		u, err := s.LockKilled(context.Background(), "vg0")
		if err == nil {
			u()
		}
		got <- err
	}()
	time.Sleep(30 * time.Millisecond)
	unlock()
	select {
	case err := <-got:
		if err != nil {
			t.Errorf("second run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the second run did not get the lock once the first let it go")
	}
}
