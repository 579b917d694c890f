package lvmlock_test

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"

	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/lvmlock/lvmfake"
)

func ref(vg, lv string) lvmlock.Ref { return lvmlock.Ref{VG: vg, LV: lv} }

func client(c *lvmfake.Cluster, host int) *lvmlock.Client {
	return &lvmlock.Client{Runner: c.Host(host), Log: zerolog.Nop()}
}

func state(t *testing.T, cl *lvmlock.Client, vgs ...string) *lvmlock.State {
	t.Helper()
	st, err := cl.State(context.Background(), true, vgs...)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestActivateBatchesPerVGAndMode(t *testing.T) {
	c := lvmfake.NewCluster(2)
	c.AddVG("vg0", true, "a", "b", "s")
	c.AddVG("vg1", true, "c")
	cl := client(c, 1)
	st := state(t, cl, "vg0", "vg1")
	c.ResetCalls()
	changes, err := cl.Activate(context.Background(), st, []lvmlock.Target{
		{Ref: ref("vg0", "a"), Mode: lvmlock.ModeEx},
		{Ref: ref("vg1", "c"), Mode: lvmlock.ModeEx},
		{Ref: ref("vg0", "s"), Mode: lvmlock.ModeSh},
		{Ref: ref("vg0", "b"), Mode: lvmlock.ModeEx},
	})
	if err != nil {
		t.Fatal(err)
	}
	wantCalls := []string{"lvchange -aey --select vg_shared=1 -- vg0/a vg0/b", "lvchange -asy --select vg_shared=1 -- vg0/s", "lvchange -aey --select vg_shared=1 -- vg1/c"}
	if diff := cmp.Diff(wantCalls, c.Calls(1)); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	if len(changes) != 4 {
		t.Errorf("changes = %v, want 4", changes)
	}
	// Already in the wanted mode: nothing to run.
	c.ResetCalls()
	if _, err := cl.Activate(context.Background(), state(t, cl, "vg0"), []lvmlock.Target{{Ref: ref("vg0", "a"), Mode: lvmlock.ModeEx}}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"lvs --reportformat json --options vg_name,lv_name,lv_uuid,vg_lock_type,segtype,lv_attr,lv_active_locally,lv_lockargs -- vg0", "lvmlockctl --info"}, c.Calls(1)); diff != "" {
		t.Errorf("calls for an LV already ex (-want +got):\n%s", diff)
	}
}

func TestActivateRollsBackOnlyWhatItChanged(t *testing.T) {
	c := lvmfake.NewCluster(2)
	c.AddVG("vg0", true, "a", "b", "c")
	c.AddVG("vg1", true, "d", "e")
	// Before: vg0/c already sh here (another domain's shareable disk);
	// vg1/e held ex by host 2, so the second batch fails.
	c.Do(func(l *lvmfake.Cluster) {
		l.VGs["vg0"].LVs["c"].Holders[1] = lvmlock.ModeSh
		l.VGs["vg1"].LVs["e"].Holders[2] = lvmlock.ModeEx
	})
	cl := client(c, 1)
	st := state(t, cl, "vg0", "vg1")
	_, err := cl.Activate(context.Background(), st, []lvmlock.Target{
		{Ref: ref("vg0", "a"), Mode: lvmlock.ModeEx},
		{Ref: ref("vg0", "b"), Mode: lvmlock.ModeEx},
		{Ref: ref("vg0", "c"), Mode: lvmlock.ModeSh},
		{Ref: ref("vg1", "d"), Mode: lvmlock.ModeEx},
		{Ref: ref("vg1", "e"), Mode: lvmlock.ModeEx},
	})
	if !lvmlock.IsLockedByOtherHost(err) {
		t.Fatalf("err = %v, want locked by other host", err)
	}
	got := map[string]lvmlock.Mode{}
	for _, r := range []lvmlock.Ref{ref("vg0", "a"), ref("vg0", "b"), ref("vg0", "c"), ref("vg1", "d"), ref("vg1", "e")} {
		got[r.String()] = c.Mode(1, r.VG, r.LV)
	}
	want := map[string]lvmlock.Mode{"vg0/a": "", "vg0/b": "", "vg0/c": lvmlock.ModeSh, "vg1/d": "", "vg1/e": ""}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("modes on host 1 after rollback (-want +got):\n%s", diff)
	}
	if m := c.Mode(2, "vg1", "e"); m != lvmlock.ModeEx {
		t.Errorf("host 2 lost its lock on vg1/e: %q", m)
	}
}

func TestActivateRollbackRestoresConvertedMode(t *testing.T) {
	c := lvmfake.NewCluster(2)
	c.AddVG("vg0", true, "a", "b")
	c.Do(func(l *lvmfake.Cluster) {
		l.VGs["vg0"].LVs["a"].Holders[1] = lvmlock.ModeSh
		l.VGs["vg0"].LVs["b"].Holders[2] = lvmlock.ModeSh
	})
	cl := client(c, 1)
	_, err := cl.Activate(context.Background(), state(t, cl, "vg0"), []lvmlock.Target{
		{Ref: ref("vg0", "a"), Mode: lvmlock.ModeEx},
		{Ref: ref("vg0", "b"), Mode: lvmlock.ModeEx},
	})
	if err == nil {
		t.Fatal("want failure: host 2 holds vg0/b sh")
	}
	if m := c.Mode(1, "vg0", "a"); m != lvmlock.ModeSh {
		t.Errorf("vg0/a = %q after rollback, want sh as before", m)
	}
}

func TestDeactivateReportsWhatStayed(t *testing.T) {
	c := lvmfake.NewCluster(1)
	c.AddVG("vg0", true, "a", "b")
	c.Do(func(l *lvmfake.Cluster) {
		l.VGs["vg0"].LVs["a"].Holders[1] = lvmlock.ModeEx
		l.VGs["vg0"].LVs["b"].Holders[1] = lvmlock.ModeEx
		l.Open[1][ref("vg0", "b")] = true
	})
	cl := client(c, 1)
	done, err := cl.Deactivate(context.Background(), state(t, cl, "vg0"), []lvmlock.Ref{ref("vg0", "a"), ref("vg0", "b")})
	if !lvmlock.IsInUse(err) {
		t.Fatalf("err = %v, want in use", err)
	}
	if diff := cmp.Diff([]lvmlock.Change{{Ref: ref("vg0", "a"), From: lvmlock.ModeEx, To: lvmlock.ModeNone}}, done); diff != "" {
		t.Errorf("changes (-want +got):\n%s", diff)
	}
}

func TestStateMissingVG(t *testing.T) {
	c := lvmfake.NewCluster(1)
	c.AddVG("vg0", true, "a")
	st := state(t, client(c, 1), "vg0", "nope")
	if diff := cmp.Diff([]string{"nope"}, st.MissingVGs); diff != "" {
		t.Errorf("missing VGs (-want +got):\n%s", diff)
	}
	if _, ok := st.LVs[ref("vg0", "a")]; !ok {
		t.Errorf("rows of the existing VG lost")
	}
}

func TestLocalVGNeverTouched(t *testing.T) {
	c := lvmfake.NewCluster(1)
	c.AddVG("local", false, "x")
	cl := client(c, 1)
	if _, err := cl.Activate(context.Background(), lvmlock.Assume(nil), []lvmlock.Target{{Ref: ref("local", "x"), Mode: lvmlock.ModeEx}}); err != nil {
		t.Fatal(err)
	}
	if m := c.Mode(1, "local", "x"); m != lvmlock.ModeNone {
		t.Errorf("LV of a local VG activated: %q", m)
	}
}

func TestDeactivateMissingIsNothingToDo(t *testing.T) {
	c := lvmfake.NewCluster(1)
	c.AddVG("vg0", true, "a")
	_, err := client(c, 1).Deactivate(context.Background(), nil, []lvmlock.Ref{ref("vg0", "gone"), ref("novg", "x")})
	if err != nil {
		t.Errorf("deactivating missing LVs: %v", err)
	}
}
