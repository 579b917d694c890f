package evacuate

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lvhook/lvhook/config"
	"github.com/lvhook/lvhook/lvmlock/lvmfake"
	"github.com/lvhook/lvhook/peer"
	"github.com/lvhook/lvhook/virt"
)

// TestRunDryRun: the plan is printed and nothing changes: no libvirt
// action, no lock, no evacuating mark (not even for a moment).
func TestRunDryRun(t *testing.T) {
	w := newWorld(t)
	w.capacity["host2"] = answer("host2", 1)
	w.capacity["host3"] = answer("host3", 1)
	w.run("web", 0.5, `priority="3"`, 1)
	w.run("db", 8, `fallback="managedsave"`, 1)
	before := w.lvm.Holders("vg0", "web-0")
	var peerAsked atomic.Bool
	w.onSleep = func() { t.Error("a dry run waited") }
	w.e.Peers = capacityFunc(func(name string) {
		peerAsked.Store(true)
		if on, _ := w.e.State.Evacuating(); on {
			t.Error("marked evacuating during a dry run")
		}
	}, w)
	rep := w.evacuate(Options{DryRun: true})
	if diff := cmp.Diff([]string{"web migrate host2 [] planned", "db managedsave  [] planned"}, results(rep)); diff != "" {
		t.Errorf("results (-want +got):\n%s", diff)
	}
	if acts := w.lv.Actions(); len(acts) != 0 {
		t.Errorf("a dry run did %v", acts)
	}
	if got := w.lvm.Holders("vg0", "web-0"); !cmp.Equal(before, got) {
		t.Errorf("locks changed: %v -> %v", before, got)
	}
	for _, call := range w.lvm.Calls(1) {
		if strings.HasPrefix(call, "lvchange") {
			t.Errorf("a dry run ran %q", call)
		}
	}
	if _, err := os.Stat(filepath.Join(w.e.Config.StateDir, "evacuating")); !os.IsNotExist(err) {
		t.Errorf("evacuating mark: %v", err)
	}
	if !peerAsked.Load() || rep.OK() || !rep.DryRun {
		t.Errorf("peers asked %v, report ok %v dry %v", peerAsked.Load(), rep.OK(), rep.DryRun)
	}
	for _, line := range []string{"web -> host2: would migrate (priority 3, 512 MiB)",
		"db: would managedsave (priority 0): no peer can take it (it needs 8.2 GiB with the 256 MiB margin): host2 512 MiB free, host3 1.0 GiB free"} {
		if !strings.Contains(w.out.String(), line) {
			t.Errorf("progress lacks %q:\n%s", line, w.out.String())
		}
	}
}

// capacityFunc is the world's peers, calling f with each name asked.
func capacityFunc(f func(name string), w *world) capacityAsker {
	return capacityAsker{f: f, w: w}
}

type capacityAsker struct {
	f func(string)
	w *world
}

func (c capacityAsker) AskCapacity(ctx context.Context, p config.Peer, req peer.CapacityRequest) (peer.CapacityAnswer, error) {
	c.f(p.Name)
	return c.w.AskCapacity(ctx, p, req)
}

// TestRunAtShutdown: at shutdown the evacuating mark stays (the host goes
// down; a peer that evacuates too must not send it domains).
func TestRunAtShutdown(t *testing.T) {
	w := newWorld(t)
	w.run("web", 1, "", 1)
	rep := w.evacuate(Options{AtShutdown: true})
	if !rep.OK() {
		t.Errorf("report %+v", rep.Domains)
	}
}

// TestRunRefusals: what makes an evacuation do nothing at all is an error:
// --to that names no peer, a libvirtd that cannot list its domains.
func TestRunRefusals(t *testing.T) {
	w := newWorld(t)
	w.run("web", 1, "", 1)
	for _, to := range []string{"host9", "host1"} {
		if _, err := w.e.Run(context.Background(), Options{To: to}); err == nil || err.Error() != "--to "+to+": no [[daemon.peer]] other than this host is named so" {
			t.Errorf("--to %s: %v", to, err)
		}
	}
	w.e.Libvirt = failingList{w.lv}
	_, err := w.e.Run(context.Background(), Options{})
	if err == nil || !strings.HasPrefix(err.Error(), "list libvirt's domains: ") {
		t.Errorf("Run with libvirtd down: %v", err)
	}
	if on, _ := w.e.State.Evacuating(); on {
		t.Error("marked evacuating after a run that did nothing")
	}
	if acts := w.lv.Actions(); len(acts) != 0 {
		t.Errorf("did %v", acts)
	}
}

// TestRunReadsDomains: what the evacuation reads of each domain decides its
// plan: a thin LV cannot be shared (fallback at once, no migration tried),
// an incoming migration is skipped, a crashed domain cannot migrate, bad
// lvhook metadata gives the defaults and an error in the report (which is
// then not OK, though the domain migrated), an opted-out domain migrates.
func TestRunReadsDomains(t *testing.T) {
	w := newWorld(t)
	w.run("thin", 1, `priority="9" fallback="leave"`, 1)
	w.lvm.Do(func(c *lvmfake.Cluster) { c.VGs["vg0"].LVs["thin-0"].Segtype = "thin" })
	in := w.run("arriving", 1, "", 1)
	crashed := w.run("crashed", 1, "", 1)
	w.lv.Do(func() {
		in.Job.Kind, in.State, crashed.State = virt.JobMigrationIn, virt.StatePaused, virt.StateCrashed
	})
	w.run("typo", 1, `priority="high"`, 1)
	w.run("own", 1, `manage="no" priority="1"`, 1)
	rep := w.evacuate(Options{})
	want := []string{
		"thin leave  [leave] left",
		"own migrate host2 [migrate] migrated",
		"arriving skip  [] skipped",
		"crashed shutdown  [shutdown] shut-down",
		"typo migrate host3 [migrate] migrated",
	}
	if diff := cmp.Diff(want, results(rep)); diff != "" {
		t.Errorf("results (-want +got):\n%s", diff)
	}
	reasons := map[string]string{}
	for _, d := range rep.Domains {
		reasons[d.Name] = d.Reason + d.MetadataError
	}
	wantReasons := map[string]string{
		"thin":     "vg0/thin-0 is a thin LV (its lock is its pool's, always exclusive): it cannot be shared for a live migration",
		"arriving": "an incoming migration: it is arriving here",
		"crashed":  "crashed (libvirt keeps its QEMU): a crashed domain cannot be migrated",
		"typo":     `domain typo: lvhook metadata: priority="high" is not an integer from -1000 to 1000 (priority 0 and the configured fallback apply)`,
		"own":      "",
	}
	if diff := cmp.Diff(wantReasons, reasons); diff != "" {
		t.Errorf("reasons (-want +got):\n%s", diff)
	}
	if rep.OK() {
		t.Error("report OK with a domain's metadata unreadable")
	}
}

// TestNamesNeverOptions: a domain's name and a peer's reach no command as
// an option: lvm gets only VG names that passed lvm's rules, after "--";
// libvirt gets the domain by UUID; a peer name that cannot be a URI's host
// makes the peer unusable instead of becoming part of the URI.
func TestNamesNeverOptions(t *testing.T) {
	w := newWorld(t)
	w.e.Config.Daemon.Peers[1].Name = "--config=/tmp/x"
	w.e.Config.Daemon.Peers[2].Name = "host3/system?socket=/tmp/evil"
	d := w.run("web", 1, "", 1)
	w.lv.Do(func() { d.Name, d.XML = "--help", strings.Replace(d.XML, "<name>web</name>", "<name>--help</name>", 1) })
	rep := w.evacuate(Options{})
	if diff := cmp.Diff([]string{"--help shutdown  [shutdown] shut-down"}, results(rep)); diff != "" {
		t.Errorf("results (-want +got):\n%s", diff)
	}
	for _, p := range rep.Peers {
		if p.Usable || !strings.Contains(p.Error, "its name is no host name for qemu+tls://NAME/system; set its libvirt_uri") {
			t.Errorf("peer %q: usable %v, error %q", p.Name, p.Usable, p.Error)
		}
	}
	for _, call := range w.lvm.Calls(1) {
		args := strings.Fields(call)
		dashdash := false
		for _, a := range args[1:] {
			switch {
			case a == "--":
				dashdash = true
			case dashdash && strings.HasPrefix(a, "-"):
				t.Errorf("%q passes %q after --", call, a)
			case strings.Contains(a, "help") || strings.Contains(a, "config") || strings.Contains(a, "evil"):
				t.Errorf("%q carries a name", call)
			}
		}
	}
	if len(w.lvm.Calls(1)) == 0 {
		t.Error("no lvm call was made: the test shows nothing")
	}
}
