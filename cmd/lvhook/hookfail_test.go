package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// brokenInput is one thing that can be wrong around a hook call: the config
// file (its text, or the path made a directory or a binary) or the XML.
type brokenInput struct {
	name string
	// config, when not "", replaces the config file's text.
	config string
	// setup, when not nil, changes the environment (LVHOOK_CONFIG).
	setup func(t *testing.T, e *hookEnv) string
	xml   []byte
	// want is what the one-line refusal says after "lvhook: VERB vm1: ",
	// with CONFIG standing for the config file's path.
	want string
}

func brokenInputs(t *testing.T) []brokenInput {
	xml := domainXML(t)
	return []brokenInput{
		{name: "unknown key", config: "hook_timout = \"30s\"\n", xml: xml,
			want: `CONFIG: hook_timout: unknown key`},
		{name: "duration without unit", config: "hook_timeout = \"30\"\n", xml: xml,
			want: `CONFIG: hook_timeout: "30" is not a duration (e.g. "30s")`},
		{name: "peer without address", config: "[[daemon.peer]]\nname = \"kvm2\"\n", xml: xml,
			want: `CONFIG: daemon.peer.address: missing in [[daemon.peer]] #1 ("kvm2"); every peer needs a name and an address`},
		{name: "lvm_timeout over hook_timeout", config: "hook_timeout = \"10s\"\nlvm_timeout = \"20s\"\n", xml: xml,
			want: `CONFIG: lvm_timeout: "20s" exceeds hook_timeout ("10s")`},
		{name: "zero reconcile_interval", config: "[daemon]\nreconcile_interval = \"0s\"\n", xml: xml,
			want: `CONFIG: daemon.reconcile_interval: must be at least 1s, got "0s"`},
		{name: "config is a directory", xml: xml, want: `CONFIG: is a directory`,
			setup: func(t *testing.T, e *hookEnv) string {
				d := filepath.Join(e.dir, "conf.d")
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
				return d
			}},
		{name: "config is a binary", xml: xml, want: `CONFIG: line 1: TOML files cannot contain control characters: '0x7f'`,
			setup: func(t *testing.T, e *hookEnv) string {
				data, err := os.ReadFile(binary)
				if err != nil {
					t.Fatal(err)
				}
				p := filepath.Join(e.dir, "lvhook.bin")
				if err := os.WriteFile(p, data[:4096], 0o644); err != nil {
					t.Fatal(err)
				}
				return p
			}},
		{name: "config missing", xml: xml, want: `CONFIG: no such file or directory`,
			setup: func(t *testing.T, e *hookEnv) string { return filepath.Join(e.dir, "missing.toml") }},
		{name: "oversized XML", xml: bytes.Repeat([]byte(" "), 16<<20+1),
			want: `domain XML on stdin is larger than 16 MiB`},
	}
}

// TestHookBrokenInputExitCodes: a broken config or an oversized XML never
// fails a call whose failure would kill a running guest (reconnect, attach,
// unknown ops) nor one where lvhook has nothing to do; the calls that may
// fail refuse with one line naming the file and the key. Nothing reaches
// lvm, nothing is written on stdout.
func TestHookBrokenInputExitCodes(t *testing.T) {
	ops := []struct {
		args []string
		verb string // "" : must exit 0
	}{
		{[]string{"vm1", "reconnect", "begin", "-"}, ""},
		{[]string{"vm1", "attach", "begin", "-"}, ""},
		{[]string{"vm1", "snapshot-revert", "begin", "-"}, ""}, // an op a future libvirt may add
		{[]string{"vm1", "started", "begin", "-"}, ""},
		{[]string{"vm1", "start", "begin", "-"}, ""},
		{[]string{"vm1", "stopped", "end", "-"}, ""},
		{[]string{"vm1", "restore", "begin", "-"}, ""},
		{[]string{"vm1", "prepare", "begin", "-"}, "refusing to start vm1"},
		{[]string{"vm1", "migrate", "begin", "-"}, "refusing incoming migration of vm1"},
		{[]string{"vm1", "release", "end", "destroyed"}, "not deactivating the LVs of vm1"},
	}
	for _, in := range brokenInputs(t) {
		for _, op := range ops {
			t.Run(in.name+"/"+op.args[1]+"_"+op.args[2], func(t *testing.T) {
				e := newHookEnv(t)
				cfg := filepath.Join(e.dir, "lvhook.toml")
				var extra []string
				if in.config != "" {
					if err := os.WriteFile(cfg, []byte("state_dir = \""+filepath.Join(e.dir, "state")+"\"\n"+in.config), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				if in.setup != nil {
					cfg = in.setup(t, e)
					extra = append(extra, "LVHOOK_CONFIG="+cfg)
				}
				stdout, stderr, code := e.run(e.hook, in.xml, extra, op.args...)
				if stdout != "" {
					t.Errorf("stdout %q, want none", stdout)
				}
				if calls := e.calls(); len(calls) != 0 {
					t.Errorf("lvm called: %q", calls)
				}
				want := strings.ReplaceAll(in.want, "CONFIG", cfg)
				if op.verb == "" {
					if code != 0 {
						t.Errorf("exit %d, want 0; stderr %q", code, stderr)
					}
					// No journald here: the reason is logged on stderr.
					if !strings.Contains(stderr, want) {
						t.Errorf("stderr %q does not log the reason %q", stderr, want)
					}
					return
				}
				want = "lvhook: " + op.verb + ": " + want + "\n"
				if code != 1 || stderr != want {
					t.Errorf("exit %d, stderr\n%q\nwant exit 1 and\n%q", code, stderr, want)
				}
			})
		}
	}
}

// TestHookDomainNamedLikeAFlag: libvirt passes the domain name first; a
// domain named -h, --help, --version, - or -- is a domain, whether lvhook runs
// from qemu.d or as `lvhook hook [--] DOMAIN OP SUBOP EXTRA`.
func TestHookDomainNamedLikeAFlag(t *testing.T) {
	for _, name := range []string{"-h", "--help", "--version", "-v", "-", "--", "help"} {
		xml := bytes.Replace(domainXML(t), []byte("<name>vm1</name>"), []byte("<name>"+name+"</name>"), 1)
		shapes := map[string][]string{
			"qemu.d":       {"HOOK", name, "prepare", "begin", "-"},
			"hook --":      {"BIN", "hook", "--", name, "prepare", "begin", "-"},
			"hook":         {"BIN", "hook", name, "prepare", "begin", "-"},
			"hook 3 args":  {"BIN", "hook", name, "prepare", "begin"},
			"hook -- 3":    {"BIN", "hook", "--", name, "prepare", "begin"},
			"qemu.d 3":     {"HOOK", name, "prepare", "begin"},
			"qemu.d op -h": {"HOOK", name, "prepare", "begin", "--help"},
		}
		if name == "--" {
			// `lvhook hook -- prepare begin -` is the separator then a
			// domain named prepare: the separator is needed here.
			delete(shapes, "hook")
			delete(shapes, "hook 3 args")
		}
		for shape, argv := range shapes {
			t.Run(name+"/"+shape, func(t *testing.T) {
				e := newHookEnv(t)
				prog := map[string]string{"HOOK": e.hook, "BIN": binary}[argv[0]]
				stdout, stderr, code := e.run(prog, xml, nil, argv[1:]...)
				if code != 0 || stdout != "" || stderr != "" {
					t.Fatalf("%q: exit %d, stdout %q, stderr %q", argv, code, stdout, stderr)
				}
				want := "lvchange -aey --select vg_shared=1 -- vg0/vm1-root vg0/vm1-data vg0/vm1-swap"
				if calls := e.calls(); !slices.Contains(calls, want) {
					t.Errorf("%q: lvm calls %q, want %q", argv, calls, want)
				}
			})
		}
	}
}

// TestHookHelp: `lvhook hook --help` alone still shows the command's help.
func TestHookHelp(t *testing.T) {
	e := newHookEnv(t)
	for _, flag := range []string{"-h", "--help"} {
		stdout, stderr, code := e.run(binary, nil, nil, "hook", flag)
		if code != 0 || !strings.Contains(stdout, "lvhook hook - run as libvirt's qemu hook") || stderr != "" {
			t.Errorf("lvhook hook %s: exit %d, stdout %q, stderr %q", flag, code, stdout, stderr)
		}
	}
}
