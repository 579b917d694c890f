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

	"github.com/lvhook/lvhook/evacuate"
	"github.com/lvhook/lvhook/virt"
	"github.com/lvhook/lvhook/virt/virttest"
)

// evacLibvirt is libvirtd for the evacuate command: block-three.xml's vm1,
// running.
type evacLibvirt struct {
	*virttest.Fake
	closed bool
}

func (l *evacLibvirt) Close() error { l.closed = true; return nil }

func evacWith(t *testing.T) *evacLibvirt {
	t.Helper()
	xml, err := os.ReadFile("../../testdata/domains/block-three.xml")
	if err != nil {
		t.Fatal(err)
	}
	l := &evacLibvirt{Fake: virttest.NewFake()}
	l.Run("vm1", "6f1c5b7e-2a1d-4c53-9a43-2b8f0d1e7c11", virt.StateRunning, virt.JobNone, string(xml))
	return l
}

// evacRun is one `lvhook evacuate` run: its output, exit status, whether it
// connected to libvirtd, and its state directory.
type evacRun struct {
	stdout, stderr string
	code           int
	dialed         bool
	stateDir       string
}

// runEvacuateCmd runs `lvhook evacuate args...` in-process with the fake
// lvm tools first in PATH and extra appended to the config file.
func runEvacuateCmd(t *testing.T, lib *evacLibvirt, extra string, args ...string) evacRun {
	t.Helper()
	e := newHookEnv(t)
	var r evacRun
	for _, kv := range e.env {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "PATH", "FAKE_LOG":
			t.Setenv(k, v)
		case "LVHOOK_CONFIG":
			t.Setenv(k, v)
			f, err := os.OpenFile(v, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteString(extra)
			f.Close()
		}
	}
	r.stateDir = filepath.Join(e.dir, "state")
	dial := func(ctx context.Context, sock string) (evacuateConn, error) {
		r.dialed = true
		if lib == nil {
			return nil, errors.New("dial unix " + sock + ": connect: no such file or directory")
		}
		return lib, nil
	}
	var stdout, stderr bytes.Buffer
	env := &env{Streams: Streams{Stdout: &stdout, Stderr: &stderr}, dialEvacuate: dial}
	r.code = env.run(append([]string{filepath.Join(e.dir, "lvhook"), "evacuate"}, args...))
	r.stdout, r.stderr = stdout.String(), stderr.String()
	return r
}

// TestEvacuateCommand: the command's refusals (exit 2, one line, nothing
// done) and its runs, with no peer configured: vm1 cannot move and gets the
// shutdown fallback (exit 1).
func TestEvacuateCommand(t *testing.T) {
	for _, tt := range []struct {
		name   string
		lib    *evacLibvirt
		extra  string
		args   []string
		code   int
		stdout []string // substrings
		stderr string   // exactly, "" for any
		acts   []string // libvirt actions, when lib is set
	}{
		{name: "at shutdown without the key", lib: evacWith(t), args: []string{"--at-shutdown"},
			stderr: "lvhook: evacuate --at-shutdown: evacuate.at_shutdown is not true in CONFIG: nothing to do\n"},
		{name: "at shutdown", lib: evacWith(t), extra: "[evacuate]\nat_shutdown = true\n", args: []string{"--at-shutdown"}, code: 1,
			stdout: []string{"vm1: shutdown, not migrated: no peer is configured ([[daemon.peer]])", "vm1: shut down in",
				"lvhook evacuate on ", "vm1     0         shutdown  -       shut-down"},
			acts: []string{"shutdown vm1"}},
		{name: "dry run", lib: evacWith(t), args: []string{"--dry-run"}, code: 1,
			stdout: []string{"vm1: would shutdown (priority 0): no peer is configured ([[daemon.peer]])", "1 would not"}},
		{name: "leave, the LVs not ex here: shut down", lib: evacWith(t), extra: "[evacuate]\nfallback = \"leave\"\n[daemon]\nexclusive_timeout = \"1ms\"\n", code: 1,
			stdout: []string{"vm1: not left running: vg0/vm1-root is none here after"}, acts: []string{"shutdown vm1"}},
		{name: "bad --parallel", lib: evacWith(t), args: []string{"--parallel", "9"}, code: 2,
			stderr: "lvhook: evacuate: --parallel must be between 1 and 8, got 9\n"},
		{name: "arguments", lib: evacWith(t), args: []string{"vm1"}, code: 2,
			stderr: "lvhook: evacuate: takes no arguments, got \"vm1\"\n"},
		{name: "unknown --to", lib: evacWith(t), args: []string{"--to", "kvm9"}, code: 2,
			stderr: "lvhook: evacuate: --to kvm9: no [[daemon.peer]] other than this host is named so\n"},
		{name: "libvirtd down", code: 2,
			stderr: "lvhook: evacuate: cannot reach libvirt: dial unix /var/run/libvirt/libvirt-sock: connect: no such file or directory\n"},
		{name: "broken config", lib: evacWith(t), extra: "[evacuate]\nfallback = \"destroy\"\n", args: []string{"--at-shutdown"}, code: 2,
			stderr: "lvhook: evacuate: CONFIG: evacuate.fallback: \"destroy\" is not managedsave, shutdown or leave\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := runEvacuateCmd(t, tt.lib, tt.extra, tt.args...)
			if r.code != tt.code {
				t.Errorf("exit %d, want %d; stderr %q", r.code, tt.code, r.stderr)
			}
			if want := strings.ReplaceAll(tt.stderr, "CONFIG", os.Getenv("LVHOOK_CONFIG")); tt.stderr != "" && r.stderr != want {
				t.Errorf("stderr %q, want %q", r.stderr, want)
			}
			if tt.stdout == nil && r.stdout != "" {
				t.Errorf("stdout %q, want none", r.stdout)
			}
			for _, s := range tt.stdout {
				if !strings.Contains(r.stdout, s) {
					t.Errorf("stdout does not contain %q:\n%s", s, r.stdout)
				}
			}
			if tt.lib != nil {
				if acts := tt.lib.Actions(); strings.Join(acts, "|") != strings.Join(tt.acts, "|") {
					t.Errorf("libvirt actions %q, want %q", acts, tt.acts)
				}
				if r.dialed && !tt.lib.closed {
					t.Error("libvirt connection left open")
				}
			}
			if tt.code == 2 && tt.lib != nil && r.dialed && tt.name != "unknown --to" {
				t.Error("connected to libvirt for a run refused before")
			}
			if strings.HasPrefix(tt.name, "at shutdown") {
				_, err := os.Stat(filepath.Join(r.stateDir, "evacuating"))
				if marked := err == nil; marked != (tt.code != 0) {
					t.Errorf("evacuating mark left %v, want %v (kept at shutdown, never without the key)", marked, tt.code != 0)
				}
			}
		})
	}
}

// TestEvacuateCommandJSON: --json writes one document on stdout, the
// progress lines go to stderr.
func TestEvacuateCommandJSON(t *testing.T) {
	r := runEvacuateCmd(t, evacWith(t), "", "--json", "--dry-run")
	var rep evacuate.Report
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("exit %d, stdout is not one JSON document: %v\n%s", r.code, err, r.stdout)
	}
	if rep.Version != 1 || !rep.DryRun || len(rep.Domains) != 1 || rep.Domains[0].Plan != "shutdown" || rep.Summary.NotMigrated != 1 {
		t.Errorf("report %+v", rep)
	}
	if !strings.Contains(r.stderr, "vm1: would shutdown") {
		t.Errorf("stderr %q, want the progress lines", r.stderr)
	}
}

// TestEvacuateUnitCommand: the command lvhook-evacuate.service runs at
// shutdown is one this binary takes, and without evacuate.at_shutdown it
// does nothing and exits 0 (a failed ExecStop would only be logged, but a
// wrong flag would never evacuate).
func TestEvacuateUnitCommand(t *testing.T) {
	data, err := os.ReadFile("../../packaging/lvhook-evacuate.service")
	if err != nil {
		t.Fatal(err)
	}
	var args []string
	for _, line := range strings.Split(string(data), "\n") {
		if cmd, ok := strings.CutPrefix(line, "ExecStop="); ok {
			_, call, found := strings.Cut(strings.TrimSuffix(cmd, "'"), "exec /usr/sbin/lvhook ")
			if !found {
				t.Fatalf("ExecStop does not exec /usr/sbin/lvhook: %q", cmd)
			}
			args = strings.Fields(call)
		}
	}
	if len(args) == 0 || args[0] != "evacuate" {
		t.Fatalf("the unit runs lvhook %q, want evacuate", args)
	}
	r := runEvacuateCmd(t, evacWith(t), "", args[1:]...)
	if r.code != 0 || r.dialed || !strings.HasSuffix(r.stderr, ": nothing to do\n") {
		t.Errorf("lvhook %q without the key: exit %d, connected %v, stderr %q", args, r.code, r.dialed, r.stderr)
	}
}
