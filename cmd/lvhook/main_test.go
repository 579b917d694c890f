package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// binary is lvhook built once for the tests that run it as libvirt does.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "lvhook-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "lvhook")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		panic("go build: " + err.Error() + "\n" + string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// hookEnv is a host with fake lvm tools first in PATH, a state directory and
// lvhook installed as /etc/libvirt/hooks/qemu.d/lvhook would be.
type hookEnv struct {
	t              *testing.T
	dir, log, hook string
	env            []string
}

func newHookEnv(t *testing.T) *hookEnv {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	qemud := filepath.Join(dir, "hooks", "qemu.d")
	for _, d := range []string{bin, qemud} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	fake, err := filepath.Abs("testdata/fakelvm")
	if err != nil {
		t.Fatal(err)
	}
	for _, tool := range []string{"lvs", "lvchange", "lvmlockctl", "dmsetup"} {
		if err := os.Symlink(fake, filepath.Join(bin, tool)); err != nil {
			t.Fatal(err)
		}
	}
	hook := filepath.Join(qemud, "lvhook")
	if err := os.Symlink(binary, hook); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "lvhook.toml")
	conf := "state_dir = \"" + filepath.Join(dir, "state") + "\"\nstorage_pool_dir = \"" + filepath.Join(dir, "pools") + "\"\nretry_delay = \"1ms\"\n"
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	e := &hookEnv{t: t, dir: dir, log: filepath.Join(dir, "calls.log"), hook: hook}
	// libvirt replaces the environment: LC_ALL, PATH, HOME, USER, LOGNAME,
	// TMPDIR. LVHOOK_CONFIG and FAKE_* are test-only.
	e.env = []string{"LC_ALL=C", "PATH=" + bin + ":/usr/bin:/bin", "HOME=/root", "USER=root", "LOGNAME=root",
		"LVHOOK_CONFIG=" + cfg, "FAKE_LOG=" + e.log}
	return e
}

// run calls the hook as libvirt does and returns stdout, stderr, exit code.
func (e *hookEnv) run(argv0 string, xml []byte, extraEnv []string, args ...string) (string, string, int) {
	e.t.Helper()
	cmd := exec.Command(argv0, args...)
	cmd.Env = append(append([]string{}, e.env...), extraEnv...)
	cmd.Stdin = bytes.NewReader(xml)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

func (e *hookEnv) calls() []string {
	data, err := os.ReadFile(e.log)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(data)), "\n")
}

func domainXML(t *testing.T) []byte {
	data, err := os.ReadFile("../../testdata/domains/block-three.xml")
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestHookPrepareOneCallForThreeLVs(t *testing.T) {
	e := newHookEnv(t)
	stdout, stderr, code := e.run(e.hook, domainXML(t), nil, "vm1", "prepare", "begin", "-")
	if code != 0 || stdout != "" {
		t.Fatalf("prepare: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	var lvchanges []string
	for _, c := range e.calls() {
		if strings.HasPrefix(c, "lvchange") {
			lvchanges = append(lvchanges, c)
		}
	}
	if diff := cmp.Diff([]string{"lvchange -aey --select vg_shared=1 -- vg0/vm1-root vg0/vm1-data vg0/vm1-swap"}, lvchanges); diff != "" {
		t.Errorf("lvchange calls (-want +got):\n%s", diff)
	}
}

func TestHookRefusalIsOneLine(t *testing.T) {
	e := newHookEnv(t)
	fail := "FAKE_FAIL=  LV locked by other host: vg0/vm1-data\n  Failed to lock logical volume vg0/vm1-data."
	stdout, stderr, code := e.run(binary, domainXML(t), []string{fail}, "hook", "vm1", "prepare", "begin", "-")
	want := "lvhook: refusing to start vm1: vg0/vm1-data is active on another host (lvmlockd: LV locked by other host); is vm1 running elsewhere?\n"
	if code != 1 || stdout != "" || stderr != want {
		t.Errorf("refused prepare: exit %d, stdout %q\nstderr %q\nwant   %q", code, stdout, stderr, want)
	}
	// The rollback deactivates what the failed call may have activated;
	// after it only reads (the lookup of the holder: lvs, then sanlock, not
	// installed here).
	var lvchanges []string
	for _, c := range e.calls() {
		if strings.HasPrefix(c, "lvchange") {
			lvchanges = append(lvchanges, c)
		}
	}
	want2 := []string{"lvchange -aey --select vg_shared=1 -- vg0/vm1-root vg0/vm1-data vg0/vm1-swap",
		"lvchange -an --select vg_shared=1 -- vg0/vm1-root vg0/vm1-data vg0/vm1-swap"}
	if diff := cmp.Diff(want2, lvchanges); diff != "" {
		t.Errorf("lvchange calls, want the activation then its rollback (-want +got):\n%s", diff)
	}
}

func TestHookNeverFailsOnReconnect(t *testing.T) {
	e := newHookEnv(t)
	for _, xml := range [][]byte{domainXML(t), []byte("<broken"), nil} {
		stdout, stderr, code := e.run(e.hook, xml, []string{"FAKE_FAIL=boom", "PATH=/nonexistent"}, "vm1", "reconnect", "begin", "-")
		if code != 0 || stdout != "" {
			t.Errorf("reconnect with %q: exit %d, stdout %q, stderr %q", xml, code, stdout, stderr)
		}
	}
}

func TestHookBadInput(t *testing.T) {
	e := newHookEnv(t)
	tests := []struct {
		name string
		xml  []byte
		args []string
		want string
	}{
		{"malformed XML", []byte("<domain><name>vm1"), []string{"vm1", "prepare", "begin", "-"}, "lvhook: malformed domain XML"},
		{"wrong domain", domainXML(t), []string{"vm2", "prepare", "begin", "-"}, `lvhook: domain XML names "vm1", libvirt called the hook for "vm2"`},
		{"too few args", nil, []string{"vm1"}, "lvhook: hook needs DOMAIN OP SUBOP [EXTRA], got 1 argument(s)"},
		{"oversized XML", bytes.Repeat([]byte(" "), 16<<20+1), []string{"vm1", "prepare", "begin", "-"}, "lvhook: refusing to start vm1: domain XML on stdin is larger than 16 MiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := e.run(e.hook, tt.xml, nil, tt.args...)
			if code != 1 || stdout != "" || !strings.HasPrefix(stderr, tt.want) || strings.Count(stderr, "\n") != 1 {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit 1 and one line starting %q", code, stdout, stderr, tt.want)
			}
		})
	}
	if calls := e.calls(); len(calls) != 0 {
		t.Errorf("bad input reached lvm: %q", calls)
	}
}

func TestIsHookPath(t *testing.T) {
	for path, want := range map[string]bool{
		"/etc/libvirt/hooks/qemu":          true,
		"/etc/libvirt/hooks/qemu.d/lvhook": true,
		"/etc/libvirt/hooks/qemu.d/50-lvm": true,
		"/usr/sbin/lvhook":                 false,
		"lvhook":                           false,
		"/etc/libvirt/hooks/lxc":           false,
		"/usr/local/bin/qemu":              false,
	} {
		if got := isHookPath(path); got != want {
			t.Errorf("isHookPath(%q) = %v, want %v", path, got, want)
		}
	}
}

// FuzzHookArgs: any argv gives a call or a one-line error, never a panic.
func FuzzHookArgs(f *testing.F) {
	f.Add("vm1", "prepare", "begin", "-")
	f.Add("", "release", "end", "destroyed")
	f.Add("a\nb", "x", "", "")
	for _, name := range []string{"-h", "--help", "help", "--version", "-", "--"} {
		f.Add(name, "reconnect", "begin", "-")
	}
	f.Fuzz(func(t *testing.T, a, b, c, d string) {
		// However a domain is named, it reaches the hook as a domain.
		for _, args := range [][]string{
			{"/etc/libvirt/hooks/qemu.d/lvhook", a, b, c, d},
			{"/etc/libvirt/hooks/qemu", a, b, c, d},
			{"/usr/sbin/lvhook", "hook", "--", a, b, c, d},
			{"lvhook", "hook", a, b, c, d},
		} {
			argv, _, ok := hookInvocation(args)
			if args[2] == "--" && args[0] == "lvhook" {
				continue // the separator, then a domain named b
			}
			if !ok || !slices.Equal(argv, []string{a, b, c, d}) {
				t.Errorf("hookInvocation(%q) = %q, %v", args, argv, ok)
			}
		}
		for n := 0; n <= 4; n++ {
			argv := []string{a, b, c, d}[:n]
			call, err := parseHookArgs(argv)
			if err != nil {
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("multi-line error for %q", argv)
				}
				continue
			}
			if call.Domain != a || call.Op != b || call.SubOp != c {
				t.Errorf("parseHookArgs(%q) = %+v", argv, call)
			}
		}
		isHookPath(a)
	})
}
