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

	"github.com/google/go-cmp/cmp"

	"github.com/lvhook/lvhook/check"
	"github.com/lvhook/lvhook/virt"
	"github.com/lvhook/lvhook/virt/virttest"
)

// cmdLibvirt is libvirtd for the check command: block-three.xml's vm1, in
// state (running or shutoff).
type cmdLibvirt struct {
	*virttest.Fake
	closed bool
}

func libvirtWith(t *testing.T, state string) *cmdLibvirt {
	t.Helper()
	xml, err := os.ReadFile("../../testdata/domains/block-three.xml")
	if err != nil {
		t.Fatal(err)
	}
	st := map[string]virt.DomainState{"running": virt.StateRunning, "shutoff": virt.StateShutoff}[state]
	l := &cmdLibvirt{Fake: virttest.NewFake()}
	l.Run("vm1", "6f1c5b7e-2a1d-4c53-9a43-2b8f0d1e7c11", st, virt.JobNone, string(xml))
	return l
}

func (l *cmdLibvirt) Close() error { l.closed = true; return nil }

// runCheckCmd runs `lvhook check args...` in-process with the fake lvm tools
// first in PATH (their lvs shows vm1's three LVs inactive) and returns
// stdout, stderr and the exit status.
func runCheckCmd(t *testing.T, lib *cmdLibvirt, args ...string) (string, string, int) {
	t.Helper()
	return runCheckCmdConfig(t, lib, "", args...)
}

// runCheckCmdConfig is runCheckCmd with config (when not "") as the text of
// the config file.
func runCheckCmdConfig(t *testing.T, lib *cmdLibvirt, config string, args ...string) (string, string, int) {
	t.Helper()
	e := newHookEnv(t)
	for _, kv := range e.env {
		k, v, _ := strings.Cut(kv, "=")
		if k == "PATH" || k == "LVHOOK_CONFIG" || k == "FAKE_LOG" {
			t.Setenv(k, v)
		}
		if k == "LVHOOK_CONFIG" && config != "" {
			if err := os.WriteFile(v, []byte(config), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	dial := func(ctx context.Context, sock string) (checkConn, error) {
		if lib == nil {
			return nil, errors.New("dial unix " + sock + ": connect: no such file or directory")
		}
		return lib, nil
	}

	var stdout, stderr bytes.Buffer
	env := &env{Streams: Streams{Stdout: &stdout, Stderr: &stderr}, dial: dial}
	code := env.run(append([]string{filepath.Join(e.dir, "lvhook"), "check"}, args...))
	return stdout.String(), stderr.String(), code
}

func TestCheckCommand(t *testing.T) {
	tests := []struct {
		name     string
		lib      *cmdLibvirt
		args     []string
		code     int
		stdout   []string // substrings
		stderrIs string
	}{
		{"healthy", libvirtWith(t, "shutoff"), []string{"--all"}, 0,
			[]string{"healthy (1 domain, 3 LVs)", "vm1     shutoff  -    vg0/vm1-root  vda   none      none    started"}, ""},
		{"problems", libvirtWith(t, "running"), []string{"vm1"}, 1,
			[]string{"3 problems", "[not-locked] vm1: vm1 runs here but vg0/vm1-root is not active here"}, ""},
		{"json", libvirtWith(t, "running"), []string{"--json", "6f1c5b7e-2a1d-4c53-9a43-2b8f0d1e7c11"}, 1,
			[]string{`"version": 1`, `"code": "not-locked"`}, ""},
		{"unknown domain", libvirtWith(t, "running"), []string{"vm9"}, 2,
			nil, "lvhook: could not check: vm9: domain not defined on this host\n"},
		{"libvirtd down", nil, []string{"--all"}, 2,
			nil, "lvhook: could not check: dial unix /var/run/libvirt/libvirt-sock: connect: no such file or directory\n"},
		{"neither names nor --all", libvirtWith(t, "running"), nil, 2,
			nil, "lvhook: check: name the domains to check, or give --all\n"},
		{"both names and --all", libvirtWith(t, "running"), []string{"--all", "vm1"}, 2,
			nil, "lvhook: check: name the domains to check, or give --all\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := runCheckCmd(t, tt.lib, tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr %q", code, tt.code, stderr)
			}
			for _, s := range tt.stdout {
				if !strings.Contains(stdout, s) {
					t.Errorf("stdout does not contain %q:\n%s", s, stdout)
				}
			}
			if tt.stdout != nil && stderr != "" {
				t.Errorf("stderr %q, want none", stderr)
			}
			if tt.stdout == nil && (stdout != "" || stderr != tt.stderrIs) {
				t.Errorf("stdout %q stderr %q, want no stdout and stderr %q", stdout, stderr, tt.stderrIs)
			}
			if tt.lib != nil && tt.code != 2 && !tt.lib.closed {
				t.Error("libvirt connection left open")
			}
		})
	}
}

func TestCheckCommandJSONDecodes(t *testing.T) {
	stdout, _, code := runCheckCmd(t, libvirtWith(t, "running"), "--json", "--all")
	var rep check.Report
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("exit %d, output is not one JSON document: %v\n%s", code, err, stdout)
	}
	if rep.Version != check.Version || rep.Summary.Problems != 3 || len(rep.Domains) != 1 {
		t.Errorf("decoded report: version %d, %d problems, %d domains", rep.Version, rep.Summary.Problems, len(rep.Domains))
	}
}

// TestCheckCommandBrokenConfig: a config file lvhook cannot use is the
// problem config-invalid, naming the file and the key; nothing else can be
// checked without it, so check exits 2 (could not check) after the report.
func TestCheckCommandBrokenConfig(t *testing.T) {
	for _, args := range [][]string{{"--all"}, {"vm1"}, {"--json", "--all"}} {
		stdout, stderr, code := runCheckCmdConfig(t, libvirtWith(t, "running"), "hook_timeout = \"30\"\n", args...)
		if code != exitCannotCheck || stderr != "" {
			t.Errorf("check %q: exit %d, stderr %q; want exit 2 and no stderr", args, code, stderr)
		}
		want := []string{"[config-invalid]", `lvhook.toml: hook_timeout: \"30\" is not a duration`}
		if args[0] == "--json" {
			var rep check.Report
			if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
				t.Fatalf("check %q: not one JSON document: %v\n%s", args, err, stdout)
			}
			if rep.Healthy || len(rep.Problems) != 1 || rep.Problems[0].Code != "config-invalid" ||
				!strings.Contains(rep.Problems[0].Message, `lvhook.toml: hook_timeout: "30" is not a duration`) {
				t.Errorf("check %q: report %+v", args, rep)
			}
			continue
		}
		want[1] = strings.ReplaceAll(want[1], `\"`, `"`)
		for _, w := range want {
			if !strings.Contains(stdout, w) {
				t.Errorf("check %q: stdout does not contain %q:\n%s", args, w, stdout)
			}
		}
	}
}

// check's description lists every problem code of check.ProblemTable, worst
// first, one per line (a long summary continues under its column), within
// helpWidth.
func TestCheckDocProblems(t *testing.T) {
	list := problemList()
	if !strings.Contains(checkDoc, "Problems, worst first (codes are stable, texts may change):\n"+list+"Each comes with") {
		t.Errorf("checkDoc does not hold the problem list where it belongs:\n%s", checkDoc)
	}
	var codes, summaries []string
	for _, line := range strings.Split(strings.TrimSuffix(list, "\n"), "\n") {
		if len(line) > helpWidth {
			t.Errorf("line wider than %d: %q", helpWidth, line)
		}
		code, summary, _ := strings.Cut(strings.TrimPrefix(line, "  "), " ")
		if code != "" {
			codes = append(codes, code)
			summaries = append(summaries, strings.TrimSpace(summary))
		} else {
			summaries[len(summaries)-1] += " " + strings.TrimSpace(summary)
		}
	}
	var want, wantSummaries []string
	for _, k := range check.ProblemTable {
		want = append(want, k.Code)
		wantSummaries = append(wantSummaries, k.Summary)
	}
	if diff := cmp.Diff(want, codes); diff != "" {
		t.Errorf("codes in check's help (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantSummaries, summaries); diff != "" {
		t.Errorf("summaries in check's help (-want +got):\n%s", diff)
	}
}
