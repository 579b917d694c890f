package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/lvhook/lvhook/config"
)

func TestManPage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := runCaptured(t, &stdout, &stderr, "__man")
	if code != 0 {
		t.Fatalf("lvhook __man: exit %d, stderr %q", code, stderr.String())
	}
	page := stdout.String()
	want := []string{".TH lvhook 8", ".SH NAME", ".SH DESCRIPTION", ".SH CHECK", ".SH EVACUATE", ".SH KILL-VG", ".SH FILES", ".SH EXIT STATUS",
		`"version": 1`, "stale-activation", "vg-killed", "/etc/libvirt/hooks/qemu.d/lvhook", `"not_migrated"`, "lvhook-evacuate.service",
		`priority="10" fallback="managedsave"`, `lvmlockctl_kill_command = "/usr/sbin/lvhook kill-vg"`}
	for _, c := range newApp(&env{}).VisibleCommands() {
		want = append(want, ".SH "+c.Name)
	}
	for _, w := range want {
		if !strings.Contains(page, w) {
			t.Errorf("man page lacks %q", w)
		}
	}
	if strings.Contains(page, "__man") || strings.Contains(page, "__completion") {
		t.Error("man page shows the hidden commands")
	}
	// groff warns about broken roff; man is on most machines, not all.
	if _, err := exec.LookPath("man"); err == nil {
		path := filepath.Join(t.TempDir(), "lvhook.8")
		if err := os.WriteFile(path, stdout.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("man", "--warnings", "-l", path)
		cmd.Env = append(os.Environ(), "MANWIDTH=80", "MANPAGER=cat", "PAGER=cat")
		var warn bytes.Buffer
		cmd.Stderr = &warn
		if err := cmd.Run(); err != nil || warn.Len() > 0 {
			t.Errorf("man -l lvhook.8: %v, warnings:\n%s", err, warn.String())
		}
	}
}

func TestBashCompletion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := runCaptured(t, &stdout, &stderr, "__completion", "bash"); code != 0 {
		t.Fatalf("lvhook __completion bash: exit %d, stderr %q", code, stderr.String())
	}
	if code := runCaptured(t, &bytes.Buffer{}, &stderr, "__completion", "zsh"); code == 0 {
		t.Error("__completion zsh: exit 0, want a refusal")
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash to run the completion")
	}
	script := filepath.Join(t.TempDir(), "lvhook.bash")
	if err := os.WriteFile(script, stdout.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	complete := func(words ...string) string {
		t.Helper()
		// COMP_WORDS as bash would split the line, the last word being
		// the one completed.
		prog := `. "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _lvhook; echo "${COMPREPLY[*]}"`
		out, err := exec.Command(bash, append([]string{"-c", prog, "_", script}, words...)...).Output()
		if err != nil {
			t.Fatalf("completing %q: %v", words, err)
		}
		return strings.TrimSpace(string(out))
	}
	tests := []struct {
		words []string
		want  string
	}{
		{[]string{"lvhook", ""}, "check hook kill-vg"},
		{[]string{"lvhook", "kill-vg", "--"}, "--force --recover --timeout"},
		{[]string{"lvhook", "ch"}, "check"},
		{[]string{"lvhook", "check", "--"}, "--all --json --socket --timeout"},
		{[]string{"lvhook", "check", "--j"}, "--json"},
		{[]string{"lvhook", "ev"}, "evacuate"},
		{[]string{"lvhook", "evacuate", "--"}, "--at-shutdown --dry-run --json --parallel --to"},
	}
	for _, tt := range tests {
		got := complete(tt.words...)
		// Commands other helpers add appear too; compare what is asked.
		for _, w := range strings.Fields(tt.want) {
			if !slices.Contains(strings.Fields(got), w) {
				t.Errorf("completing %q: %q lacks %q", tt.words, got, w)
			}
		}
	}
}

// runCaptured runs lvhook with stdout and stderr captured.
func runCaptured(t *testing.T, stdout, stderr *bytes.Buffer, args ...string) int {
	t.Helper()
	return Run(append([]string{"lvhook"}, args...), Streams{Stdout: stdout, Stderr: stderr})
}

// TestSampleConfig keeps packaging/lvhook.toml, the conffile the packages
// install, true to config.Config: every key is there, commented out, with its
// default; uncommented, the file loads as the defaults plus the example peer.
func TestSampleConfig(t *testing.T) {
	data, err := os.ReadFile("../../packaging/lvhook.toml")
	if err != nil {
		t.Fatal(err)
	}
	// Settings are written "#key = value" and "#[table]", prose "# text".
	setting := regexp.MustCompile(`(?m)^#([a-z\[])`)
	for _, line := range strings.Split(string(data), "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			t.Errorf("sample config sets %q: every line must be commented out", line)
		}
	}
	uncommented := setting.ReplaceAll(data, []byte("$1"))
	path := filepath.Join(t.TempDir(), "lvhook.toml")
	if err := os.WriteFile(path, uncommented, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := config.Load(path, true)
	if err != nil {
		t.Fatalf("sample config, uncommented: %v", err)
	}
	want := config.Default()
	want.Daemon.Peers = []config.Peer{{Name: "kvm2.example.org", Address: "kvm2.example.org:16520", HostID: 2,
		LibvirtURI: "qemu+tls://kvm2.example.org/system"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("sample config differs from the defaults (-want +got):\n%s", diff)
	}
	keys := regexp.MustCompile(`(?m)^#([a-z_]+) = `).FindAllStringSubmatch(string(data), -1)
	present := map[string]bool{}
	for _, k := range keys {
		present[k[1]] = true
	}
	for _, k := range tomlKeys(reflect.TypeOf(config.Config{})) {
		if !present[k] {
			t.Errorf("sample config lacks key %q: add it, commented, with its default and what it does", k)
		}
	}
}

// tomlKeys lists the toml keys of a config struct and of its tables.
func tomlKeys(t reflect.Type) []string {
	var keys []string
	for i := range t.NumField() {
		f := t.Field(i)
		name := strings.Split(f.Tag.Get("toml"), ",")[0]
		switch {
		case name == "" || name == "-":
		case f.Type.Kind() == reflect.Struct && f.Type.Name() != "Duration":
			keys = append(keys, tomlKeys(f.Type)...)
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
			keys = append(keys, tomlKeys(f.Type.Elem())...)
		default:
			keys = append(keys, name)
		}
	}
	return keys
}
