package lvmlock_test

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"

	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/lvmlock/lvmfake"
)

// TestConvertKeepsPartialSuccess: sh -> ex of two LVs where another host
// still holds one sh converts the other and rolls nothing back, and never
// activates an LV that is not active here.
func TestConvertKeepsPartialSuccess(t *testing.T) {
	c := lvmfake.NewCluster(2)
	c.AddVG("vg0", true, "a", "b", "idle")
	c.AddVG("vg1", true, "c")
	c.Do(func(c *lvmfake.Cluster) {
		c.VGs["vg0"].LVs["a"].Holders[1] = lvmlock.ModeSh
		c.VGs["vg0"].LVs["b"].Holders[1] = lvmlock.ModeSh
		c.VGs["vg0"].LVs["b"].Holders[2] = lvmlock.ModeSh
		c.VGs["vg1"].LVs["c"].Holders[1] = lvmlock.ModeSh
	})
	cl := &lvmlock.Client{Runner: c.Host(1), Log: zerolog.Nop()}
	ctx := context.Background()
	st, err := cl.State(ctx, true, "vg0", "vg1")
	if err != nil {
		t.Fatal(err)
	}
	ex := func(vg, lv string) lvmlock.Target {
		return lvmlock.Target{Ref: lvmlock.Ref{VG: vg, LV: lv}, Mode: lvmlock.ModeEx}
	}
	done, err := cl.Convert(ctx, st, []lvmlock.Target{ex("vg0", "a"), ex("vg0", "b"), ex("vg0", "idle"), ex("vg1", "c")})
	if !lvmlock.IsLockedByOtherHost(err) {
		t.Errorf("Convert error = %v, want LV locked by other host", err)
	}
	wantDone := []lvmlock.Change{
		{Ref: lvmlock.Ref{VG: "vg0", LV: "a"}, From: lvmlock.ModeSh, To: lvmlock.ModeEx},
		{Ref: lvmlock.Ref{VG: "vg1", LV: "c"}, From: lvmlock.ModeSh, To: lvmlock.ModeEx},
	}
	if diff := cmp.Diff(wantDone, done); diff != "" {
		t.Errorf("Convert changes mismatch (-want +got):\n%s", diff)
	}
	got := map[string]map[int]lvmlock.Mode{
		"a": c.Holders("vg0", "a"), "b": c.Holders("vg0", "b"), "idle": c.Holders("vg0", "idle"), "c": c.Holders("vg1", "c"),
	}
	want := map[string]map[int]lvmlock.Mode{
		"a": {1: lvmlock.ModeEx}, "b": {1: lvmlock.ModeSh, 2: lvmlock.ModeSh}, "idle": {}, "c": {1: lvmlock.ModeEx},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("holders mismatch (-want +got):\n%s", diff)
	}
}
