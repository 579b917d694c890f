package migration

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"

	"github.com/lvhook/lvhook/config"
	"github.com/lvhook/lvhook/domxml"
	"github.com/lvhook/lvhook/hook"
	"github.com/lvhook/lvhook/lvmlock"
)

// pki is a test CA that issues certificates into files, as libvirt's PKI
// recipes lay them out.
type pki struct {
	t    *testing.T
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string
}

func newPKI(t *testing.T, name string) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	p := &pki{t: t, dir: t.TempDir(), cert: cert, key: key}
	p.file = p.write("cacert.pem", "CERTIFICATE", der)
	return p
}

func (p *pki) write(name, typ string, der []byte) string {
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		p.t.Fatal(err)
	}
	return path
}

var serial int64 = 10

// issue makes a certificate for cn (with cn also as DNS name unless cnOnly)
// for the given usage, and returns its credentials.
func (p *pki) issue(cn string, usage x509.ExtKeyUsage, cnOnly bool) *Credentials {
	p.t.Helper()
	c := certSpec{cn: cn, usages: []x509.ExtKeyUsage{usage}}
	if !cnOnly {
		c.dns = []string{cn}
	}
	return p.issueSpec(c)
}

// certSpec is what a test certificate says.
type certSpec struct {
	cn     string
	dns    []string
	ips    []string
	usages []x509.ExtKeyUsage // none: no extended key usage extension
}

// issueSpec makes the certificate c describes and returns its credentials.
func (p *pki) issueSpec(c certSpec) *Credentials {
	p.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		p.t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: c.cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: c.usages, DNSNames: c.dns,
	}
	for _, ip := range c.ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		p.t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	base := fmt.Sprintf("cert-%d", serial)
	certFile := p.write(base+".pem", "CERTIFICATE", der)
	keyFile := p.write(base+"-key.pem", "PRIVATE KEY", kder)
	cr, err := LoadCredentials(p.file, certFile, keyFile)
	if err != nil {
		p.t.Fatal(err)
	}
	return cr
}

func (p *pki) pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.cert)
	return pool
}

// syncBuffer collects log output written from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// serve runs the peer server of host h on loopback with server credentials
// cr, and returns its address.
func serve(t *testing.T, h *testHost, cr *Credentials, peers []config.Peer, log zerolog.Logger) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Helper: h.helper, Peers: peers, MaxWait: 5 * time.Second, Log: log}
	addr, _ := serveWith(t, srv, ln, cr)
	return addr
}

// serveWith runs srv on ln with server credentials cr until the test ends or
// stop is called; stop returns what Serve returned.
func serveWith(t *testing.T, srv *Server, ln net.Listener, cr *Credentials) (addr string, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln, ServerTLS(cr, srv.Peers, srv.Log)) }()
	stop = sync.OnceValue(func() error {
		cancel()
		return <-done
	})
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String(), stop
}

// TestPeerChannel runs the real TLS channel between two hosts: only a
// configured peer with a certificate of the cluster's CA is heard, and the
// asking host checks the server's name.
func TestPeerChannel(t *testing.T) {
	ca := newPKI(t, "cluster CA")
	rogue := newPKI(t, "rogue CA")
	peers := []config.Peer{{Name: "kvm1", HostID: 1}, {Name: "kvm2", HostID: 2}}
	for _, tc := range []struct {
		name       string
		server     *Credentials
		client     *Credentials
		migrating  bool
		granted    bool
		reason     string // in the answer
		err        string // in Ask's error
		loggedPeer bool
	}{
		{name: "configured peer, migrating domain: yes", server: ca.issue("kvm1", x509.ExtKeyUsageServerAuth, false),
			client: ca.issue("kvm2", x509.ExtKeyUsageClientAuth, false), migrating: true, granted: true, loggedPeer: true},
		{name: "client certificate naming kvm2 in its CN only: refused", server: ca.issue("kvm1", x509.ExtKeyUsageServerAuth, false),
			client: ca.issue("kvm2", x509.ExtKeyUsageClientAuth, true), migrating: true, err: "remote error: tls"},
		{name: "server certificate naming kvm1 in its CN only: not trusted", server: ca.issue("kvm1", x509.ExtKeyUsageServerAuth, true),
			client: ca.issue("kvm2", x509.ExtKeyUsageClientAuth, false), migrating: true, err: "kvm1"},
		{name: "forged request, domain not migrating: no", server: ca.issue("kvm1", x509.ExtKeyUsageServerAuth, false),
			client: ca.issue("kvm2", x509.ExtKeyUsageClientAuth, false), reason: "no outgoing migration job", loggedPeer: true},
		{name: "unknown CA: refused in the handshake", server: ca.issue("kvm1", x509.ExtKeyUsageServerAuth, false),
			client:    &Credentials{Cert: rogue.issue("kvm2", x509.ExtKeyUsageClientAuth, false).Cert, CA: ca.pool()},
			migrating: true, err: "remote error: tls"},
		{name: "cluster certificate of a host that is no peer: refused", server: ca.issue("kvm1", x509.ExtKeyUsageServerAuth, false),
			client: ca.issue("intruder", x509.ExtKeyUsageClientAuth, false), migrating: true, err: "remote error: tls"},
		{name: "server certificate used as a client's: refused", server: ca.issue("kvm1", x509.ExtKeyUsageServerAuth, false),
			client: ca.issue("kvm2", x509.ExtKeyUsageServerAuth, false), migrating: true, err: "remote error: tls"},
		{name: "server certificate for client use only: not trusted", server: ca.issue("kvm1", x509.ExtKeyUsageClientAuth, false),
			client: ca.issue("kvm2", x509.ExtKeyUsageClientAuth, false), migrating: true, err: "usage"},
		{name: "server that is not the peer asked: not trusted", server: ca.issue("kvm3", x509.ExtKeyUsageServerAuth, false),
			client: ca.issue("kvm2", x509.ExtKeyUsageClientAuth, false), migrating: true, err: "neither kvm1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCluster(t, 2)
			job := JobNone
			if tc.migrating {
				job = JobMigrationOut
			}
			c.hosts[0].lv.run("vm1", uuid1, StateRunning, job, "/dev/vg0/a")
			c.hold(1, "a", lvmlock.ModeEx)
			logs := &syncBuffer{}
			addr := serve(t, c.hosts[0], tc.server, peers, zerolog.New(logs))
			tr := &HTTPSTransport{Credentials: func() (*Credentials, error) { return tc.client, nil }}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			peer := config.Peer{Name: "kvm1", Address: addr}
			reserve := Request{Domain: "vm1", UUID: uuid1, TimeoutMS: 5000}
			if ans, err := tr.Ask(ctx, peer, ReservePath, reserve); tc.err == "" && (err != nil || ans.Granted != tc.granted) {
				t.Fatalf("Ask(%s) = %+v, %v; want granted=%v", ReservePath, ans, err, tc.granted)
			}
			ans, err := tr.Ask(ctx, peer, DowngradePath, req(uuid1, "a"))
			switch {
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("Ask() error = %v, want one containing %q", err, tc.err)
			case tc.err == "" && err != nil:
				t.Fatalf("Ask() error = %v", err)
			case tc.err == "" && (ans.Granted != tc.granted || !strings.Contains(ans.Reason, tc.reason)):
				t.Errorf("Ask() = %+v, want granted=%v, reason containing %q", ans, tc.granted, tc.reason)
			}
			want := lock{1: "ex"}
			if tc.granted {
				want = lock{1: "sh"}
			}
			if diff := cmp.Diff(want, c.lvm.Holders("vg0", "a")); diff != "" {
				t.Errorf("vg0/a (-want +got):\n%s", diff)
			}
			logged := logs.String()
			if tc.loggedPeer && (!strings.Contains(logged, `"request":"/v1/downgrade"`) || !strings.Contains(logged, `"request":"/v1/reserve"`) ||
				!strings.Contains(logged, `"message":"answer sent"`) || !strings.Contains(logged, `"peer":"kvm2"`)) {
				t.Errorf("request and answer not logged with the peer:\n%s", logged)
			}
		})
	}
}

// TestServerRefusesRequestsWithoutDeadline: a request must say how long its
// sender waits.
func TestServerRefusesRequestsWithoutDeadline(t *testing.T) {
	ca := newPKI(t, "cluster CA")
	c := newTestCluster(t, 2)
	c.hosts[0].lv.run("vm1", uuid1, StateRunning, JobMigrationOut, "/dev/vg0/a")
	c.hold(1, "a", lvmlock.ModeEx)
	peers := []config.Peer{{Name: "kvm1"}, {Name: "kvm2"}}
	addr := serve(t, c.hosts[0], ca.issue("kvm1", x509.ExtKeyUsageServerAuth, false), peers, zerolog.Nop())
	client := ca.issue("kvm2", x509.ExtKeyUsageClientAuth, false)
	tr := &HTTPSTransport{Credentials: func() (*Credentials, error) { return client, nil }}
	r := req(uuid1, "a")
	r.TimeoutMS = 0
	ans, err := tr.Ask(context.Background(), config.Peer{Name: "kvm1", Address: addr}, DowngradePath, r)
	if err != nil || ans.Granted || !strings.Contains(ans.Reason, "no deadline") {
		t.Errorf("Ask() = %+v, %v; want a refusal: no deadline", ans, err)
	}
}

// TestHandoverOverTLS: the destination's migrate begin asks both other
// hosts over the real channel; only the source reserves; prepare asks it
// alone, and it converts.
func TestHandoverOverTLS(t *testing.T) {
	ca := newPKI(t, "cluster CA")
	c := newTestCluster(t, 3)
	src, other := c.hosts[0], c.hosts[2]
	src.lv.run("vm1", uuid1, StateRunning, JobMigrationOut, "/dev/vg0/a", "/dev/vg0/b")
	c.hold(1, "a", lvmlock.ModeEx)
	c.hold(1, "b", lvmlock.ModeEx)
	peers := []config.Peer{{Name: "kvm1", HostID: 1}, {Name: "kvm2", HostID: 2}, {Name: "kvm3", HostID: 3}}
	peers[0].Address = serve(t, src, ca.issue("kvm1", x509.ExtKeyUsageServerAuth, false), peers, zerolog.Nop())
	peers[2].Address = serve(t, other, ca.issue("kvm3", x509.ExtKeyUsageServerAuth, false), peers, zerolog.Nop())
	client := ca.issue("kvm2", x509.ExtKeyUsageClientAuth, false)
	ho := &Handover{Self: "kvm2", Peers: peers, Timeout: 5 * time.Second, Log: zerolog.Nop(),
		Transport: &HTTPSTransport{Credentials: func() (*Credentials, error) { return client, nil }}}
	dom := &domxml.Domain{Name: "vm1", UUID: uuid1}
	refs := []lvmlock.Ref{{VG: "vg0", LV: "a"}, {VG: "vg0", LV: "b"}}
	source, err := ho.Reserve(context.Background(), dom)
	if err != nil || source != "kvm1" {
		t.Fatalf("Reserve() = %q, %v; want kvm1", source, err)
	}
	if err := ho.Downgrade(context.Background(), source, dom, refs); err != nil {
		t.Fatalf("Downgrade() = %v", err)
	}
	if diff := cmp.Diff(map[string]map[int]lvmlock.Mode{"a": {1: "sh"}, "b": {1: "sh"}}, c.holders("a", "b")); diff != "" {
		t.Errorf("locks after the handover (-want +got):\n%s", diff)
	}
	// The migration is over; a second request (forged) is refused by all.
	src.lv.setJob(uuid1, JobNone)
	err = ho.Downgrade(context.Background(), "kvm1", &domxml.Domain{Name: "vm1", UUID: uuid1}, refs)
	if !errors.Is(err, hook.ErrHandoverRefused) || !strings.Contains(err.Error(), "kvm1: domain "+uuid1+" has no outgoing migration job") {
		t.Errorf("Downgrade() without a job = %v, want ErrHandoverRefused naming kvm1's reason", err)
	}
}

// TestPeerHoldersOverTLS: lvhook check learns from every peer which LVs it
// holds; a peer that does not answer makes the answer unknown, not empty.
func TestPeerHoldersOverTLS(t *testing.T) {
	ca := newPKI(t, "cluster CA")
	c := newTestCluster(t, 3)
	c.hold(1, "a", lvmlock.ModeEx)
	c.hold(1, "iso", lvmlock.ModeSh)
	c.hold(3, "iso", lvmlock.ModeSh)
	peers := []config.Peer{{Name: "kvm1"}, {Name: "kvm2"}, {Name: "kvm3"}}
	peers[0].Address = serve(t, c.hosts[0], ca.issue("kvm1", x509.ExtKeyUsageServerAuth, false), peers, zerolog.Nop())
	peers[2].Address = serve(t, c.hosts[2], ca.issue("kvm3", x509.ExtKeyUsageServerAuth, false), peers, zerolog.Nop())
	client := ca.issue("kvm2", x509.ExtKeyUsageClientAuth, false)
	ph := &PeerHolders{Self: "kvm2", Peers: []config.Peer{peers[0], peers[2]}, Timeout: 5 * time.Second,
		Transport: &HTTPSTransport{Credentials: func() (*Credentials, error) { return client, nil }}}
	ref := func(lv string) lvmlock.Ref { return lvmlock.Ref{VG: "vg0", LV: lv} }
	got, err := ph.Holders(context.Background(), []lvmlock.Ref{ref("a"), ref("b"), ref("iso")})
	if err != nil {
		t.Fatalf("Holders() = %v", err)
	}
	want := map[lvmlock.Ref][]hook.Holder{
		ref("a"):   {{Host: "kvm1", Mode: "ex"}},
		ref("iso"): {{Host: "kvm1", Mode: "sh"}, {Host: "kvm3", Mode: "sh"}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Holders() mismatch (-want +got):\n%s", diff)
	}
	ph.Peers = append(ph.Peers, config.Peer{Name: "kvm4", Address: "127.0.0.1:1"})
	if got, err := ph.Holders(context.Background(), []lvmlock.Ref{ref("a")}); err == nil || got != nil {
		t.Errorf("Holders() with a peer down = %v, %v; want an error", got, err)
	}
}

// TestPeerIdentity: a host is known by the subject alternative names of its
// certificate (DNS names, IP addresses), matched against the configured
// peer's name or address, never by the Common Name; a client certificate
// must carry the clientAuth usage, a server certificate serverAuth.
// serverRefuses is TestPeerIdentity's expectation of a client certificate
// the server rejects.
const serverRefuses = "(the server refuses the client)"

func TestPeerIdentity(t *testing.T) {
	client, server := x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth
	srv := func(c certSpec) certSpec {
		if c.usages == nil {
			c.usages = []x509.ExtKeyUsage{server}
		}
		return c
	}
	cli := func(c certSpec) certSpec {
		if c.usages == nil {
			c.usages = []x509.ExtKeyUsage{client}
		}
		return c
	}
	tests := []struct {
		name           string
		server, client certSpec
		// kvm2 is configured at this address on the server.
		clientAddr string
		// In Ask's error; "" for an answer. serverRefuses: the server
		// rejects the client's certificate, which a TLS 1.3 client learns
		// after its side of the handshake, as the server's alert ("remote
		// error: tls: ...") or, when the server has already closed the
		// connection, as a closed connection: either way the request fails
		// and never reaches the service.
		err string
	}{
		{name: "DNS names", server: srv(certSpec{cn: "kvm1", dns: []string{"kvm1"}}), client: cli(certSpec{cn: "kvm2", dns: []string{"kvm2"}})},
		{name: "DNS names, another CN", server: srv(certSpec{cn: "x", dns: []string{"KVM1"}}), client: cli(certSpec{cn: "y", dns: []string{"other", "kvm2"}})},
		{name: "client known by its address", server: srv(certSpec{dns: []string{"kvm1"}}),
			client: cli(certSpec{cn: "kvm2", ips: []string{"10.0.0.2"}}), clientAddr: "10.0.0.2:16520"},
		{name: "server known by its address", server: srv(certSpec{cn: "kvm1", ips: []string{"127.0.0.1"}}),
			client: cli(certSpec{dns: []string{"kvm2"}})},
		{name: "client with both usages", server: srv(certSpec{dns: []string{"kvm1"}}),
			client: certSpec{dns: []string{"kvm2"}, usages: []x509.ExtKeyUsage{server, client}}},

		{name: "client named kvm2 by its CN, another by its SAN", server: srv(certSpec{dns: []string{"kvm1"}}),
			client: cli(certSpec{cn: "kvm2", dns: []string{"intruder"}}), err: serverRefuses},
		{name: "client with an address that is not kvm2's", server: srv(certSpec{dns: []string{"kvm1"}}),
			client: cli(certSpec{cn: "kvm2", ips: []string{"10.0.0.9"}}), clientAddr: "10.0.0.2", err: serverRefuses},
		{name: "server named kvm1 by its CN, another by its SAN", server: srv(certSpec{cn: "kvm1", dns: []string{"kvm3"}}),
			client: cli(certSpec{dns: []string{"kvm2"}}), err: "kvm1"},
		{name: "client without extended key usage", server: srv(certSpec{dns: []string{"kvm1"}}),
			client: certSpec{dns: []string{"kvm2"}, usages: []x509.ExtKeyUsage{}}, err: serverRefuses},
		{name: "client for any usage", server: srv(certSpec{dns: []string{"kvm1"}}),
			client: certSpec{dns: []string{"kvm2"}, usages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}, err: serverRefuses},
		{name: "server without extended key usage", server: certSpec{dns: []string{"kvm1"}, usages: []x509.ExtKeyUsage{}},
			client: cli(certSpec{dns: []string{"kvm2"}}), err: "serverAuth"},
	}
	ca := newPKI(t, "cluster CA")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			svc := newBlockingService()
			svc.releaseAll()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			peers := []config.Peer{{Name: "kvm1", Address: ln.Addr().String()}, {Name: "kvm2", Address: tc.clientAddr}}
			addr, _ := serveWith(t, &Server{Helper: svc, Peers: peers, Log: zerolog.Nop()}, ln, ca.issueSpec(tc.server))
			cr := ca.issueSpec(tc.client)
			tr := &HTTPSTransport{Credentials: func() (*Credentials, error) { return cr, nil }}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			ans, err := tr.Ask(ctx, config.Peer{Name: "kvm1", Address: addr}, DowngradePath, req(uuid1, "a"))
			switch {
			case tc.err == "" && (err != nil || !ans.Granted):
				t.Errorf("Ask() = %+v, %v; want an answer", ans, err)
			case tc.err == serverRefuses:
				refused := err != nil && slices.ContainsFunc([]string{"remote error: tls",
					"use of closed network connection", "EOF", "connection reset by peer", "broken pipe"},
					func(s string) bool { return strings.Contains(err.Error(), s) })
				if !refused || ans.Granted {
					t.Errorf("Ask() = %+v, %v; want the server to refuse the client's certificate", ans, err)
				}
				select {
				case path := <-svc.entered:
					t.Errorf("the service got a %s request from a refused client", path)
				default:
				}
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Errorf("Ask() = %+v, %v; want an error containing %q", ans, err, tc.err)
			}
		})
	}
}
