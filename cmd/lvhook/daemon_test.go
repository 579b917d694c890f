package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeConfig(t *testing.T, text string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "lvhook.toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("LVHOOK_CONFIG", path)
}

// TestDaemonNotifiesSystemd: with libvirtd down, the daemon still tells
// systemd it is ready (while it keeps trying), and says it stops.
func TestDaemonNotifiesSystemd(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, `state_dir = "`+dir+`/state"
[daemon]
libvirt_socket = "`+dir+`/no-libvirt-sock"
`)
	sock := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runDaemon(ctx, &env{stderr: &bytes.Buffer{}}) }()
	buf := make([]byte, 512)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(buf[:n]); !strings.HasPrefix(got, "READY=1\nSTATUS=waiting for libvirt") {
		t.Errorf("first notification %q, want READY while waiting for libvirt", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("runDaemon after cancel = %v", err)
	}
	for {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if string(buf[:n]) == "STOPPING=1" {
			break
		}
	}
}

// TestDaemonNeedsCertificatesForPeers: peers without TLS files is a
// configuration error, said at start.
func TestDaemonNeedsCertificatesForPeers(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, `state_dir = "`+dir+`/state"
[daemon]
listen = "127.0.0.1:0"
ca_cert = "`+dir+`/missing-ca.pem"
[[daemon.peer]]
name = "kvm2"
address = "10.0.0.2"
`)
	err := runDaemon(context.Background(), &env{stderr: &bytes.Buffer{}})
	if err == nil || !strings.Contains(err.Error(), "missing-ca.pem") || !strings.Contains(err.Error(), "daemon.ca_cert") {
		t.Errorf("runDaemon() = %v, want an error naming the CA file and daemon.ca_cert", err)
	}
}

// TestDaemonRefusesBrokenConfig: the lock helper does not run with a config
// it cannot fully use; it says why in one line (what systemctl status shows)
// and never tells systemd it is ready.
func TestDaemonRefusesBrokenConfig(t *testing.T) {
	dir := t.TempDir()
	for _, text := range []string{
		"[daemon]\nreconcile_interval = \"0s\"\n",
		"[daemon]\npeer_timeout = \"10\"\n",
		"[[daemon.peer]]\nname = \"kvm2\"\n",
	} {
		writeConfig(t, `state_dir = "`+dir+`/state"`+"\n"+text)
		sock := filepath.Join(t.TempDir(), "notify")
		conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		t.Setenv("NOTIFY_SOCKET", sock)
		var stderr bytes.Buffer
		code := run([]string{"lvhook", "daemon"}, nil, &stderr)
		path := os.Getenv("LVHOOK_CONFIG")
		want := "lvhook: refusing to start the lock helper: " + path + ": "
		if code != exitFailure || !strings.HasPrefix(stderr.String(), want) || strings.Count(stderr.String(), "\n") != 1 {
			t.Errorf("daemon with %q: exit %d, stderr %q; want exit 1 and one line starting %q", text, code, stderr.String(), want)
		}
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		if n, err := conn.Read(make([]byte, 64)); err == nil {
			t.Errorf("daemon with %q notified systemd (%d bytes)", text, n)
		}
		conn.Close()
	}
}
