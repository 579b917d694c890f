package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lvhook/lvhook/config"
	"github.com/lvhook/lvhook/peer"
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
	go func() { done <- runDaemon(ctx, &env{Streams: Streams{Stderr: &bytes.Buffer{}}}) }()
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
	err := runDaemon(context.Background(), &env{Streams: Streams{Stderr: &bytes.Buffer{}}})
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
		code := Run([]string{"lvhook", "daemon"}, Streams{Stdout: io.Discard, Stderr: &stderr})
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

func writePKI(t *testing.T, dir string) {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	write := func(name, typ string, der []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	caKey := newKey()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	write("ca.pem", "CERTIFICATE", caDER)
	for i, c := range []struct {
		name  string
		usage x509.ExtKeyUsage
	}{{"kvm1", x509.ExtKeyUsageServerAuth}, {"kvm2", x509.ExtKeyUsageClientAuth}} {
		key := newKey()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: c.name},
			DNSNames: []string{c.name}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{c.usage}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalPKCS8PrivateKey(key)
		write(c.name+".pem", "CERTIFICATE", der)
		write(c.name+"-key.pem", "PRIVATE KEY", kder)
	}
}

func TestDaemonDrainsPeerRequests(t *testing.T) {
	dir := t.TempDir()
	writePKI(t, dir)
	// An lvs that waits for the test: the holders request stays in flight.
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	// It gives up after 10 s, or when the test's directory is gone.
	lvs := "#!/bin/sh\ntouch " + dir + "/lvs-started\ni=0\n" +
		"while [ -d " + dir + " ] && [ ! -e " + dir + "/lvs-release ] && [ $i -lt 500 ]; do sleep 0.02; i=$((i+1)); done\n" +
		"echo '{\"report\":[{\"lv\":[]}]}'\n"
	if err := os.WriteFile(filepath.Join(bin, "lvs"), []byte(lvs), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	t.Cleanup(func() { os.WriteFile(dir+"/lvs-release", nil, 0o600) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	writeConfig(t, `state_dir = "`+dir+`/state"
[daemon]
host_name = "kvm1"
listen = "`+addr+`"
libvirt_socket = "`+dir+`/no-libvirt-sock"
ca_cert = "`+dir+`/ca.pem"
cert = "`+dir+`/kvm1.pem"
key = "`+dir+`/kvm1-key.pem"
[[daemon.peer]]
name = "kvm1"
address = "`+addr+`"
[[daemon.peer]]
name = "kvm2"
address = "127.0.0.1:1"
`)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- runDaemon(ctx, &env{Streams: Streams{Stderr: &bytes.Buffer{}}}) }()

	cr, err := peer.LoadCredentials(dir+"/ca.pem", dir+"/kvm2.pem", dir+"/kvm2-key.pem")
	if err != nil {
		t.Fatal(err)
	}
	tr := &peer.HTTPSTransport{Credentials: func() (*peer.Credentials, error) { return cr, nil }}
	asked := make(chan error, 1)
	go func() {
		// The daemon may still be starting: ask until it listens.
		for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
			_, err := tr.AskHolders(context.Background(), config.Peer{Name: "kvm1", Address: addr},
				peer.HoldersRequest{LVs: []peer.LVRef{{VG: "vg0", LV: "a"}}, TimeoutMS: 10000})
			if err == nil || !strings.Contains(err.Error(), "connection refused") || time.Since(start) > 5*time.Second {
				asked <- err
				return
			}
		}
	}()
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(dir + "/lvs-started"); err == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("runDaemon() = %v before any request", err)
		default:
		}
		if time.Since(start) > 5*time.Second {
			select {
			case err := <-asked:
				t.Fatalf("the holders request never ran lvs: %v", err)
			default:
				t.Fatal("the holders request never ran lvs")
			}
		}
	}

	cancel() // as SIGTERM does
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Since(start) > 3*time.Second {
			t.Fatal("new peer connections still accepted 3 s after SIGTERM")
		}
	}
	select {
	case err := <-done:
		t.Fatalf("runDaemon returned (%v) with a peer request in flight", err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := os.WriteFile(dir+"/lvs-release", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := <-asked; err != nil {
		t.Errorf("AskHolders() in flight at SIGTERM = %v, want its answer", err)
	}
	if err := <-done; err != nil {
		t.Errorf("runDaemon() = %v", err)
	}
}
