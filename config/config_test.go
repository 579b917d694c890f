package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestDefaultConfigIsValid(t *testing.T) {
	if err := Default().validate(); err != nil {
		t.Errorf("Default().validate() = %v", err)
	}
	cfg, err := Load(filepath.Join(t.TempDir(), "none.toml"), false)
	if err != nil {
		t.Errorf("Load of a missing optional file = %v", err)
	}
	if !reflect.DeepEqual(cfg, Default()) {
		t.Errorf("Load of a missing optional file: %+v, want the defaults", cfg)
	}
}

// TestLoadConfigRefuses: every unusable value is refused with one line that
// names the file and the key (or the line when the file does not parse).
func TestLoadConfigRefuses(t *testing.T) {
	tests := []struct{ name, text, want string }{
		{"duration without unit", `hook_timeout = "30"`, `hook_timeout: "30" is not a duration (e.g. "30s")`},
		{"duration as a number", `lvm_timeout = 30`, `lvm_timeout: "30" is not a duration (e.g. "30s")`},
		{"duration in a table", "[daemon]\npeer_timeout = \"soon\"", `daemon.peer_timeout: "soon" is not a duration (e.g. "30s")`},
		{"unknown key", `hook_timout = "30s"`, `hook_timout: unknown key`},
		{"unknown key in a peer", "[[daemon.peer]]\nname = \"kvm2\"\naddress = \"kvm2:16520\"\nadress = \"x\"", `daemon.peer.adress: unknown key`},
		{"wrong type", `shared_retries = "2"`, `shared_retries: incompatible types: TOML value has type string; destination has type integer`},
		{"peer without address", "[[daemon.peer]]\nname = \"kvm2\"", `daemon.peer.address: missing in [[daemon.peer]] #1 ("kvm2"); every peer needs a name and an address`},
		{"peer without name", "[[daemon.peer]]\nname = \"kvm2\"\naddress = \"kvm2:16520\"\n[[daemon.peer]]\naddress = \"kvm3:16520\"", `daemon.peer.name: missing in [[daemon.peer]] #2; every peer needs a name and an address`},
		{"lvm_timeout over hook_timeout", "hook_timeout = \"10s\"\nlvm_timeout = \"20s\"", `lvm_timeout: "20s" exceeds hook_timeout ("10s")`},
		{"zero hook_timeout", `hook_timeout = "0s"`, `hook_timeout: must be positive, got "0s"`},
		{"negative hook_timeout", `hook_timeout = "-30s"`, `hook_timeout: must be positive, got "-30s"`},
		{"zero lvm_timeout", `lvm_timeout = "0s"`, `lvm_timeout: must be positive, got "0s"`},
		{"negative lvm_timeout", `lvm_timeout = "-1s"`, `lvm_timeout: must be positive, got "-1s"`},
		{"zero rollback_timeout", `rollback_timeout = "0s"`, `rollback_timeout: must be positive, got "0s"`},
		{"negative rollback_timeout", `rollback_timeout = "-5s"`, `rollback_timeout: must be positive, got "-5s"`},
		{"zero retry_delay", `retry_delay = "0s"`, `retry_delay: must be positive, got "0s"`},
		{"negative retry_delay", `retry_delay = "-1ms"`, `retry_delay: must be positive, got "-1ms"`},
		{"zero marker_ttl", `marker_ttl = "0s"`, `marker_ttl: must be positive, got "0s"`},
		{"negative marker_ttl", `marker_ttl = "-1m"`, `marker_ttl: must be positive, got "-1m0s"`},
		{"zero kill_vg_timeout", `kill_vg_timeout = "0s"`, `kill_vg_timeout: must be positive, got "0s"`},
		{"kill_vg_timeout past sanlock's grace", `kill_vg_timeout = "40s"`, `kill_vg_timeout: must be at most 35s (sanlock's kill grace is 40s), got "40s"`},
		{"negative shared_retries", `shared_retries = -1`, `shared_retries: must be between 0 and 20, got -1`},
		{"too many shared_retries", `shared_retries = 21`, `shared_retries: must be between 0 and 20, got 21`},
		{"zero reconcile_interval", "[daemon]\nreconcile_interval = \"0s\"", `daemon.reconcile_interval: must be at least 1s, got "0s"`},
		{"tiny reconcile_interval", "[daemon]\nreconcile_interval = \"10ms\"", `daemon.reconcile_interval: must be at least 1s, got "10ms"`},
		{"zero peer_timeout", "[daemon]\npeer_timeout = \"0s\"", `daemon.peer_timeout: must be positive, got "0s"`},
		{"negative peer_timeout", "[daemon]\npeer_timeout = \"-1s\"", `daemon.peer_timeout: must be positive, got "-1s"`},
		{"zero exclusive_timeout", "[daemon]\nexclusive_timeout = \"0s\"", `daemon.exclusive_timeout: must be positive, got "0s"`},
		{"empty state_dir", `state_dir = ""`, `state_dir: must not be empty`},
		{"negative lockspace_wait", `lockspace_wait = "-1s"`, `lockspace_wait: must be between 0 and 10m0s, got "-1s"`},
		{"huge lockspace_wait", `lockspace_wait = "1h"`, `lockspace_wait: must be between 0 and 10m0s, got "1h0m0s"`},
		{"zero lockspace_start_timeout", `lockspace_start_timeout = "0s"`, `lockspace_start_timeout: must be positive, got "0s"`},
		{"option as a lockspace", `lockspaces = ["vg0", "--config=x"]`, `lockspaces: "--config=x" is not a volume group name`},
		{"lockspaces not a list", `lockspaces = "vg0"`, `lockspaces: incompatible types: TOML value has type string; destination has type slice`},
		{"unknown evacuate key", "[evacuate]\nat_shutdwn = true", `evacuate.at_shutdwn: unknown key`},
		{"evacuate fallback", "[evacuate]\nfallback = \"destroy\"", `evacuate.fallback: "destroy" is not managedsave, shutdown or leave`},
		{"evacuate shutdown_timeout", "[evacuate]\nshutdown_timeout = \"0s\"", `evacuate.shutdown_timeout: must be positive, got "0s"`},
		{"evacuate migration_timeout", "[evacuate]\nmigration_timeout = \"-5m\"", `evacuate.migration_timeout: must be positive, got "-5m0s"`},
		{"evacuate timeout without unit", "[evacuate]\ntimeout = \"600\"", `evacuate.timeout: "600" is not a duration (e.g. "30s")`},
		{"evacuate timeout within the fallbacks' reserve", "[evacuate]\ntimeout = \"2m30s\"",
			`evacuate.timeout: "2m30s" leaves the fallbacks no time: it must exceed shutdown_timeout ("2m0s") by more than 30s`},
		{"evacuate parallel 0", "[evacuate]\nparallel = 0", `evacuate.parallel: must be between 1 and 8, got 0`},
		{"evacuate parallel 9", "[evacuate]\nparallel = 9", `evacuate.parallel: must be between 1 and 8, got 9`},
		{"evacuate negative margin", "[evacuate]\nmemory_margin_mib = -1", `evacuate.memory_margin_mib: must be between 0 and 1048576, got -1`},
		{"evacuate at_shutdown as text", "[evacuate]\nat_shutdown = \"yes\"", `evacuate.at_shutdown: incompatible types: TOML value has type string; destination has type boolean`},
		{"peer libvirt_uri not a URI", "[[daemon.peer]]\nname = \"kvm2\"\naddress = \"kvm2\"\nlibvirt_uri = \"kvm2\"",
			`daemon.peer.libvirt_uri: "kvm2" in [[daemon.peer]] #1 ("kvm2") is not a URI (scheme://host...)`},
		{"peer libvirt_uri not qemu", "[[daemon.peer]]\nname = \"kvm2\"\naddress = \"kvm2\"\nlibvirt_uri = \"xen://kvm2/\"",
			`daemon.peer.libvirt_uri: "xen://kvm2/" in [[daemon.peer]] #1 ("kvm2") is not a qemu URI (e.g. qemu+tls://kvm2/system)`},
		{"peer libvirt_uri with a space", "[[daemon.peer]]\nname = \"kvm2\"\naddress = \"kvm2\"\nlibvirt_uri = \"qemu+tls://kvm2/system --p2p\"",
			`daemon.peer.libvirt_uri: "qemu+tls://kvm2/system --p2p" in [[daemon.peer]] #1 ("kvm2") holds a space or a control character`},
		{"peer migrate_uri", "[[daemon.peer]]\nname = \"kvm2\"\naddress = \"kvm2\"\nmigrate_uri = \"10.0.0.2\"",
			`daemon.peer.migrate_uri: "10.0.0.2" in [[daemon.peer]] #1 ("kvm2") is not a URI (scheme://host...)`},
		{"syntax error", "hook_timeout = \"30s\"\nlvm_timeout = ", `line 2: unexpected EOF; expected value`},
		{"binary file", "\x7fELF\x02\x01\x01\x00\x00\x00", `line 1: TOML files cannot contain control characters: '0x7f'`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "lvhook.toml")
			if err := os.WriteFile(path, []byte(tt.text), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path, false)
			want := path + ": " + tt.want
			if err == nil || err.Error() != want {
				t.Fatalf("Load(%q)\n = %v\nwant %s", tt.text, err, want)
			}
			var ce *Error
			if !errors.As(err, &ce) || ce.Path != path {
				t.Errorf("error %T is not a *Error for %s", err, path)
			}
		})
	}
}

// TestLoadConfigNotAFile: a directory, a device or a FIFO named as the config
// is refused at once (a FIFO without a writer must not block the hook).
func TestLoadConfigNotAFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		dir:         dir + ": is a directory",
		fifo:        fifo + ": not a regular file",
		"/dev/zero": "/dev/zero: not a regular file",
	} {
		done := make(chan error, 1)
		go func() {
			_, err := Load(path, false)
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil || err.Error() != want {
				t.Errorf("Load(%s) = %v, want %s", path, err, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("Load(%s) blocks", path)
		}
	}
	missing := filepath.Join(dir, "missing.toml")
	if _, err := Load(missing, true); err == nil || !strings.HasPrefix(err.Error(), missing+": ") {
		t.Errorf("Load of a missing required file = %v, want an error naming it", err)
	}
}

func TestLoadConfigTooLarge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lvhook.toml")
	if err := os.WriteFile(path, []byte("#"+strings.Repeat("x", 1<<20)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path, false); err == nil || err.Error() != path+": larger than 1 MiB" {
		t.Errorf("Load of a 1 MiB file = %v", err)
	}
}

func TestLoadConfigValid(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lvhook.toml")
	text := "hook_timeout = \"40s\"\nshared_retries = 0\n[daemon]\nreconcile_interval = \"1s\"\n[[daemon.peer]]\nname = \"kvm2\"\naddress = \"kvm2:16520\"\nhost_id = 2\n" +
		"migrate_uri = \"tcp://10.0.0.2\"\n[evacuate]\nat_shutdown = true\nfallback = \"managedsave\"\nparallel = 8\nmemory_margin_mib = 0\ntimeout = \"2m31s\"\n"
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path, true)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HookTimeout.D() != 40*time.Second || cfg.SharedRetries != 0 || cfg.Daemon.ReconcileInterval.D() != time.Second || len(cfg.Daemon.Peers) != 1 {
		t.Errorf("Load = %+v", cfg)
	}
	want := EvacuateConfig{AtShutdown: true, Fallback: "managedsave", ShutdownTimeout: Duration(2 * time.Minute),
		MigrationTimeout: Duration(5 * time.Minute), Timeout: Duration(151 * time.Second), Parallel: 8}
	if diff := cmp.Diff(want, cfg.Evacuate); diff != "" {
		t.Errorf("evacuate (-want +got):\n%s", diff)
	}
	if p := cfg.Daemon.Peers[0]; p.MigrateURI != "tcp://10.0.0.2" || p.LibvirtURI != "" {
		t.Errorf("peer %+v", p)
	}
}

// TestMigrationURI: a peer's libvirtd for a peer-to-peer migration is its
// libvirt_uri, else qemu+tls://NAME/system; a name that cannot be a URI's
// host (it would change the URI's meaning) is refused.
func TestMigrationURI(t *testing.T) {
	tests := []struct {
		peer Peer
		want string
		err  string
	}{
		{Peer{Name: "kvm2.example.org"}, "qemu+tls://kvm2.example.org/system", ""},
		{Peer{Name: "kvm2", LibvirtURI: "qemu+tcp://10.0.0.2/system"}, "qemu+tcp://10.0.0.2/system", ""},
		{Peer{Name: "10.0.0.2"}, "qemu+tls://10.0.0.2/system", ""},
		{Peer{Name: "fd00::2"}, "qemu+tls://[fd00::2]/system", ""},
		{Peer{Name: "[fd00::2]"}, "qemu+tls://[fd00::2]/system", ""},
		{Peer{Name: "kvm_old"}, "qemu+tls://kvm_old/system", ""},
		{Peer{Name: "kvm2/system?socket=/tmp/x"}, "", `its name is no host name`},
		{Peer{Name: "root@kvm2"}, "", `its name is no host name`},
		{Peer{Name: "--help"}, "", `its name is no host name`},
		{Peer{Name: ""}, "", `its name is no host name`},
	}
	for _, tt := range tests {
		got, err := tt.peer.MigrationURI()
		switch {
		case tt.err == "" && (err != nil || got != tt.want):
			t.Errorf("MigrationURI(%+v) = %q, %v; want %q", tt.peer, got, err, tt.want)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("MigrationURI(%+v) = %q, %v; want an error with %q", tt.peer, got, err, tt.err)
		}
	}
}

// TestPeerWarnings: a peer named twice, or a host_id out of range or claimed
// twice, loads (a file that loaded before keeps loading: a refusal would fail
// every hook call, release end included) with a warning, and such a host_id
// names no one.
func TestPeerWarnings(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lvhook.toml")
	text := "[[daemon.peer]]\nname = \"kvm2\"\naddress = \"a\"\nhost_id = 2\n" +
		"[[daemon.peer]]\nname = \"KVM2\"\naddress = \"b\"\nhost_id = 2\n" +
		"[[daemon.peer]]\nname = \"kvm4\"\naddress = \"c\"\nhost_id = 2001\n" +
		"[[daemon.peer]]\nname = \"kvm5\"\naddress = \"d\"\nhost_id = 5\n"
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path, true)
	if err != nil {
		t.Fatalf("Load = %v, want the file loaded", err)
	}
	want := []string{
		`daemon.peer.name: [[daemon.peer]] #2 ("KVM2") names the host of [[daemon.peer]] #1 again`,
		`daemon.peer.host_id: 2 in [[daemon.peer]] #2 ("KVM2") is already the host_id of [[daemon.peer]] #1; each host has its own, so neither is used`,
		`daemon.peer.host_id: 2001 in [[daemon.peer]] #3 ("kvm4") is not a sanlock host_id (1 to 2000; 0 or none: unknown); ignored`,
	}
	if diff := cmp.Diff(want, cfg.Warnings()); diff != "" {
		t.Errorf("Warnings (-want +got):\n%s", diff)
	}
	for id, name := range map[int]string{2: "", 2001: "", 5: "kvm5", 0: "", -1: ""} {
		if got := cfg.Daemon.PeerName(id); got != name {
			t.Errorf("PeerName(%d) = %q, want %q", id, got, name)
		}
	}
	if w := Default().Warnings(); len(w) != 0 {
		t.Errorf("defaults warn: %v", w)
	}
}

// kill-vg keeps state_dir and daemon.libvirt_socket from a file it cannot
// otherwise use, when the file parses; nothing else of it.
func TestSalvage(t *testing.T) {
	def := Default()
	for _, tc := range []struct {
		name, text  string
		state, sock string
	}{
		{"a typo elsewhere", "state_dir = \"/srv/lvhook\"\nhook_timout = \"30s\"\n[daemon]\nlibvirt_socket = \"/run/libvirt/virtqemud-sock\"",
			"/srv/lvhook", "/run/libvirt/virtqemud-sock"},
		{"a value out of range elsewhere", "state_dir = \"/srv/lvhook\"\nkill_vg_timeout = \"1m\"", "/srv/lvhook", def.Daemon.LibvirtSocket},
		{"not set", "hook_timeout = \"30\"", def.StateDir, def.Daemon.LibvirtSocket},
		{"relative", "state_dir = \"run\"", def.StateDir, def.Daemon.LibvirtSocket},
		{"does not parse", "state_dir = \"/srv/lvhook\"\nx = ", def.StateDir, def.Daemon.LibvirtSocket},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "lvhook.toml")
			if err := os.WriteFile(path, []byte(tc.text), 0o644); err != nil {
				t.Fatal(err)
			}
			want := Default()
			want.StateDir, want.Daemon.LibvirtSocket = tc.state, tc.sock
			if diff := cmp.Diff(want, Salvage(path)); diff != "" {
				t.Errorf("Salvage(%q) (-want +got):\n%s", tc.text, diff)
			}
		})
	}
	if diff := cmp.Diff(Default(), Salvage(filepath.Join(t.TempDir(), "none.toml"))); diff != "" {
		t.Errorf("Salvage of a missing file (-want +got):\n%s", diff)
	}
}
