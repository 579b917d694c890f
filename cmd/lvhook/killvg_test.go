package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lvhook/lvhook/killvg"
	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/lvmlock/lvmfake"
	"github.com/lvhook/lvhook/state"
	"github.com/lvhook/lvhook/virt"
	"github.com/lvhook/lvhook/virt/virttest"
)

// killEnv is a host whose vm1 runs on vg0/vm1-root, with lvmfake's lvm and
// dmsetup and virttest's libvirtd, for `lvhook kill-vg` run in-process.
type killEnv struct {
	t      *testing.T
	lvm    *lvmfake.Cluster
	lib    *virttest.Fake
	dir    string // the state directory
	cfg    string // the config file
	parent string
}

func newKillEnv(t *testing.T) *killEnv {
	k := &killEnv{t: t, lvm: lvmfake.NewCluster(2), lib: virttest.NewFake(), parent: "lvmlockctl"}
	k.dir = filepath.Join(t.TempDir(), "state")
	k.cfg = filepath.Join(t.TempDir(), "lvhook.toml")
	k.config("")
	t.Setenv("LVHOOK_CONFIG", k.cfg)
	k.lvm.AddVG("vg0", true, "vm1-root")
	ref := lvmlock.Ref{VG: "vg0", LV: "vm1-root"}
	k.lvm.Do(func(c *lvmfake.Cluster) {
		c.VGs["vg0"].LVs["vm1-root"].Holders[1] = lvmlock.ModeEx
		c.Open[1][ref] = true
	})
	k.lib.Run("vm1", "6f1c5b7e-2a1d-4c53-9a43-2b8f0d1e7c11", virt.StateRunning, virt.JobNone,
		"<domain><name>vm1</name><uuid>6f1c5b7e-2a1d-4c53-9a43-2b8f0d1e7c11</uuid><devices><disk type='block'><source dev='/dev/vg0/vm1-root'/><target dev='vda'/></disk></devices></domain>")
	k.lib.Stopped = func(string, string) { k.lvm.Do(func(c *lvmfake.Cluster) { delete(c.Open[1], ref) }) }
	k.lvm.Kill(1, "vg0")
	return k
}

// config writes the config file: state_dir, then extra.
func (k *killEnv) config(extra string) {
	if err := os.WriteFile(k.cfg, []byte("state_dir = \""+k.dir+"\"\n"+extra), 0o644); err != nil {
		k.t.Fatal(err)
	}
}

func (k *killEnv) run(args ...string) (stdout, stderr string, code int) {
	var out, errb bytes.Buffer
	e := &env{Streams: Streams{Stdout: &out, Stderr: &errb},
		dialRW: func(context.Context, string) (killvg.Libvirt, error) { return k.lib, nil },
		runner: k.lvm.Host(1), parent: func() string { return k.parent }}
	code = e.run(append([]string{"lvhook", "kill-vg"}, args...))
	return out.String(), errb.String(), code
}

func (k *killEnv) record() (state.Killed, bool) {
	rec, ok, err := (&state.State{Dir: k.dir}).LoadKilled("vg0")
	if err != nil {
		k.t.Fatal(err)
	}
	return rec, ok
}

func TestKillVGCommand(t *testing.T) {
	for _, tc := range []struct {
		name   string
		setup  func(k *killEnv)
		args   []string
		code   int
		stderr string // a substring of its one line (none when "")
		killed bool
	}{
		{"run by lvmlockctl", nil, []string{"vg0"}, 0, "", true},
		{"run by hand", func(k *killEnv) { k.parent = "bash"; k.lvm.Do(func(c *lvmfake.Cluster) { c.Killed[1]["vg0"] = false }) },
			[]string{"vg0"}, 2, "lvhook: kill-vg: refusing to kill VG vg0: lvmlockd is not killing it", false},
		{"run by hand while lvmlockd kills it", func(k *killEnv) { k.parent = "bash" }, []string{"vg0"}, 0, "", true},
		{"forced", func(k *killEnv) { k.parent = "bash"; k.lvm.Do(func(c *lvmfake.Cluster) { c.Killed[1]["vg0"] = false }) },
			[]string{"--force", "vg0"}, 0, "", true},
		{"a wipe fails", func(k *killEnv) {
			k.lvm.Intercept = func(_ int, args []string) (string, string, error, bool) {
				if args[0] == "dmsetup" && args[1] == "wipe_table" {
					return "", "device-mapper: reload ioctl on vg0-vm1--root  failed: Invalid argument\nCommand failed.\n", lvmfake.ExitError{Code: 1}, true
				}
				return "", "", nil, false
			}
		}, []string{"vg0"}, 1, "lvhook: kill-vg: VG vg0: 1 device(s) may still be written (vg0-vm1--root: device-mapper: reload ioctl", true},
		{"a config file lvhook cannot use", func(k *killEnv) { k.config("hook_timout = \"30s\"\n") }, []string{"vg0"}, 0, "", true},
		{"a name that is an option", nil, []string{"--", "-ffoo"}, 2, `lvhook: kill-vg: "-ffoo" is not a valid volume group name`, false},
		{"an unknown flag", nil, []string{"-ffoo"}, 2, "lvhook: kill-vg: flag provided but not defined: -ffoo", false},
		{"a name with a space", nil, []string{"vg0 --x"}, 2, `lvhook: kill-vg: "vg0 --x" is not a valid volume group name`, false},
		{"two names", nil, []string{"vg0", "vg1"}, 2, "lvhook: kill-vg: name one VG, got 2 arguments", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := newKillEnv(t)
			if tc.setup != nil {
				tc.setup(k)
			}
			stdout, stderr, code := k.run(tc.args...)
			if code != tc.code || stdout != "" {
				t.Errorf("exit %d, stdout %q; want %d and nothing on stdout\nstderr: %s", code, stdout, tc.code, stderr)
			}
			last := stderr
			if lines := strings.Split(strings.TrimSpace(stderr), "\n"); len(lines) > 0 {
				last = lines[len(lines)-1]
			}
			if tc.stderr != "" && !strings.HasPrefix(last, tc.stderr) {
				t.Errorf("stderr's last line %q\nwant it to start with %q", last, tc.stderr)
			}
			rec, found := k.record()
			if found != tc.killed {
				t.Errorf("record written: %v, want %v", found, tc.killed)
			}
			running, _ := k.lib.ActiveDomains(context.Background())
			if tc.killed && tc.code == 0 && (!rec.Verified || k.lvm.Writable(1, "vg0", "vm1-root") || len(running) != 0) {
				t.Errorf("record %+v; vm1-root writable: %v; running %v", rec, k.lvm.Writable(1, "vg0", "vm1-root"), running)
			}
			if !tc.killed {
				for _, c := range k.lvm.Calls(1) {
					if strings.HasPrefix(c, "dmsetup") {
						t.Errorf("ran %q", c)
					}
				}
			}
		})
	}
}

// Recovery from the command line: refused while the LV is open, done once
// it is not, then nothing to do.
func TestKillVGRecoverCommand(t *testing.T) {
	k := newKillEnv(t)
	vm1 := k.lib.Domain("6f1c5b7e-2a1d-4c53-9a43-2b8f0d1e7c11")
	k.lib.Do(func() {
		vm1.StopErr = errors.New("Failed to terminate process 4242 with SIGKILL: Device or resource busy")
	})
	if _, stderr, code := k.run("vg0"); code != 0 {
		t.Fatalf("kill: exit %d, %s", code, stderr)
	}
	k.lvm.Drop(1, "vg0") // lvmlockctl, after the exit 0
	stdout, stderr, code := k.run("--recover", "vg0")
	if code != 1 || stdout != "" || !strings.HasPrefix(stderr, "lvhook: kill-vg --recover: not recovered yet: vg0-vm1--root is still open (1)") {
		t.Errorf("recover with vm1 still running: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	k.lvm.Do(func(c *lvmfake.Cluster) { clear(c.Open[1]) })
	stdout, stderr, code = k.run("--recover", "vg0")
	if code != 0 || stdout != "VG vg0 recovered on this host: its domains may start here again\n" {
		t.Errorf("recover: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	stdout, _, code = k.run("--recover", "vg0")
	if code != 0 || stdout != "VG vg0 was not killed on this host: nothing to recover\n" {
		t.Errorf("recover again: exit %d, stdout %q", code, stdout)
	}
}

// The binary as lvmlockctl runs it (its child, stdin /dev/null, stdout a
// pipe it never reads): nothing on stdout, exit 0, the record written;
// dmsetup named the domain's device, never the lvmlock LV. With wipes that
// hang, exit 1 within kill_vg_timeout.
func TestKillVGBinary(t *testing.T) {
	for _, tc := range []struct {
		name   string
		env    []string
		config string
		code   int
		within time.Duration
	}{
		{"storage failing", nil, "", 0, 10 * time.Second},
		{"a config file lvhook cannot use", nil, "hook_timout = \"30s\"\n", 0, 10 * time.Second},
		{"storage hanging", []string{"FAKE_DM_HANG=1"}, "kill_vg_timeout = \"1s\"\n", 1, 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newHookEnv(t)
			cfg := filepath.Join(e.dir, "lvhook.toml")
			data, err := os.ReadFile(cfg)
			if err != nil {
				t.Fatal(err)
			}
			// No libvirtd: a real one on the test machine is not kill-vg's.
			data = append(append(data, tc.config...), "[daemon]\nlibvirt_socket = \""+filepath.Join(e.dir, "no-libvirt-sock")+"\"\n"...)
			if err := os.WriteFile(cfg, data, 0o644); err != nil {
				t.Fatal(err)
			}
			lockctl := filepath.Join(e.dir, "bin", "lvmlockctl")
			start := time.Now()
			stdout, stderr, code := e.run(lockctl, nil, tc.env, "--run", binary, "kill-vg", "vg0")
			if took := time.Since(start); took > tc.within {
				t.Errorf("took %s, want under %s", took, tc.within)
			}
			if code != tc.code || stdout != "" {
				t.Errorf("exit %d, stdout %q; want %d and nothing\nstderr: %s", code, stdout, tc.code, stderr)
			}
			var wipes []string
			for _, c := range e.calls() {
				if strings.HasPrefix(c, "dmsetup wipe_table") {
					wipes = append(wipes, c)
				}
				if strings.HasPrefix(c, "lvmlockctl --info") {
					t.Errorf("ran %q: under lvmlockctl the guard needs no dump", c)
				}
			}
			if len(wipes) != 1 || wipes[0] != "dmsetup wipe_table -- vg0-vm1--root" {
				t.Errorf("wipes %q, want vg0-vm1--root's only", wipes)
			}
			data, err = os.ReadFile(filepath.Join(e.dir, "state", "killed", "vg0.json"))
			var rec state.Killed
			if err != nil || json.Unmarshal(data, &rec) != nil || rec.Verified != (tc.code == 0) {
				t.Errorf("record %s (%v): want verified %v", data, err, tc.code == 0)
			}
		})
	}
}
