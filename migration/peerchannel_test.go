package migration

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"

	"github.com/lvhook/lvhook/config"
	"github.com/lvhook/lvhook/domxml"
	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/peer"
	"github.com/lvhook/lvhook/peer/peertest"
	"github.com/lvhook/lvhook/virt"
)

// serve runs the peer server of host h on loopback with server credentials
// cr, and returns its address.
func serve(t *testing.T, h *testHost, cr *peer.Credentials, peers []config.Peer, log zerolog.Logger) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &peer.Server{Helper: h.helper, Peers: peers, MaxWait: 5 * time.Second, Log: log}
	addr, _ := peertest.Serve(t, srv, ln, cr)
	return addr
}

// TestPeerChannel runs the real TLS channel between two hosts: only a
// configured peer with a certificate of the cluster's CA is heard, and the
// asking host checks the server's name.
func TestPeerChannel(t *testing.T) {
	ca := peertest.NewPKI(t, "cluster CA")
	rogue := peertest.NewPKI(t, "rogue CA")
	peers := []config.Peer{{Name: "kvm1", HostID: 1}, {Name: "kvm2", HostID: 2}}
	for _, tc := range []struct {
		name       string
		server     *peer.Credentials
		client     *peer.Credentials
		migrating  bool
		granted    bool
		reason     string // in the answer
		err        string // in Ask's error
		loggedPeer bool
	}{
		{name: "configured kvm1, migrating domain: yes", server: ca.Issue("kvm1", x509.ExtKeyUsageServerAuth, false),
			client: ca.Issue("kvm2", x509.ExtKeyUsageClientAuth, false), migrating: true, granted: true, loggedPeer: true},
		{name: "client certificate naming kvm2 in its CN only: refused", server: ca.Issue("kvm1", x509.ExtKeyUsageServerAuth, false),
			client: ca.Issue("kvm2", x509.ExtKeyUsageClientAuth, true), migrating: true, err: "remote error: tls"},
		{name: "server certificate naming kvm1 in its CN only: not trusted", server: ca.Issue("kvm1", x509.ExtKeyUsageServerAuth, true),
			client: ca.Issue("kvm2", x509.ExtKeyUsageClientAuth, false), migrating: true, err: "kvm1"},
		{name: "forged request, domain not migrating: no", server: ca.Issue("kvm1", x509.ExtKeyUsageServerAuth, false),
			client: ca.Issue("kvm2", x509.ExtKeyUsageClientAuth, false), reason: "no outgoing migration job", loggedPeer: true},
		{name: "unknown CA: refused in the handshake", server: ca.Issue("kvm1", x509.ExtKeyUsageServerAuth, false),
			client:    &peer.Credentials{Cert: rogue.Issue("kvm2", x509.ExtKeyUsageClientAuth, false).Cert, CA: ca.Pool()},
			migrating: true, err: "remote error: tls"},
		{name: "cluster certificate of a host that is no kvm1: refused", server: ca.Issue("kvm1", x509.ExtKeyUsageServerAuth, false),
			client: ca.Issue("intruder", x509.ExtKeyUsageClientAuth, false), migrating: true, err: "remote error: tls"},
		{name: "server certificate used as a client's: refused", server: ca.Issue("kvm1", x509.ExtKeyUsageServerAuth, false),
			client: ca.Issue("kvm2", x509.ExtKeyUsageServerAuth, false), migrating: true, err: "remote error: tls"},
		{name: "server certificate for client use only: not trusted", server: ca.Issue("kvm1", x509.ExtKeyUsageClientAuth, false),
			client: ca.Issue("kvm2", x509.ExtKeyUsageClientAuth, false), migrating: true, err: "usage"},
		{name: "server that is not the kvm1 asked: not trusted", server: ca.Issue("kvm3", x509.ExtKeyUsageServerAuth, false),
			client: ca.Issue("kvm2", x509.ExtKeyUsageClientAuth, false), migrating: true, err: "neither kvm1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCluster(t, 2)
			job := virt.JobNone
			if tc.migrating {
				job = virt.JobMigrationOut
			}
			c.hosts[0].lv.run("vm1", uuid1, virt.StateRunning, job, "/dev/vg0/a")
			c.hold(1, "a", lvmlock.ModeEx)
			logs := &peertest.SyncBuffer{}
			addr := serve(t, c.hosts[0], tc.server, peers, zerolog.New(logs))
			tr := &peer.HTTPSTransport{Credentials: func() (*peer.Credentials, error) { return tc.client, nil }}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			kvm1 := config.Peer{Name: "kvm1", Address: addr}
			reserve := peer.Request{Domain: "vm1", UUID: uuid1, TimeoutMS: 5000}
			if ans, err := tr.Ask(ctx, kvm1, peer.ReservePath, reserve); tc.err == "" && (err != nil || ans.Granted != tc.granted) {
				t.Fatalf("Ask(%s) = %+v, %v; want granted=%v", peer.ReservePath, ans, err, tc.granted)
			}
			ans, err := tr.Ask(ctx, kvm1, peer.DowngradePath, req(uuid1, "a"))
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
				t.Errorf("request and answer not logged with the kvm1:\n%s", logged)
			}
		})
	}
}

// TestServerRefusesRequestsWithoutDeadline: a request must say how long its
// sender waits.
func TestServerRefusesRequestsWithoutDeadline(t *testing.T) {
	ca := peertest.NewPKI(t, "cluster CA")
	c := newTestCluster(t, 2)
	c.hosts[0].lv.run("vm1", uuid1, virt.StateRunning, virt.JobMigrationOut, "/dev/vg0/a")
	c.hold(1, "a", lvmlock.ModeEx)
	peers := []config.Peer{{Name: "kvm1"}, {Name: "kvm2"}}
	addr := serve(t, c.hosts[0], ca.Issue("kvm1", x509.ExtKeyUsageServerAuth, false), peers, zerolog.Nop())
	client := ca.Issue("kvm2", x509.ExtKeyUsageClientAuth, false)
	tr := &peer.HTTPSTransport{Credentials: func() (*peer.Credentials, error) { return client, nil }}
	r := req(uuid1, "a")
	r.TimeoutMS = 0
	ans, err := tr.Ask(context.Background(), config.Peer{Name: "kvm1", Address: addr}, peer.DowngradePath, r)
	if err != nil || ans.Granted || !strings.Contains(ans.Reason, "no deadline") {
		t.Errorf("Ask() = %+v, %v; want a refusal: no deadline", ans, err)
	}
}

// TestHandoverOverTLS: the destination's migrate begin asks both other
// hosts over the real channel; only the source reserves; prepare asks it
// alone, and it converts.
func TestHandoverOverTLS(t *testing.T) {
	ca := peertest.NewPKI(t, "cluster CA")
	c := newTestCluster(t, 3)
	src, other := c.hosts[0], c.hosts[2]
	src.lv.run("vm1", uuid1, virt.StateRunning, virt.JobMigrationOut, "/dev/vg0/a", "/dev/vg0/b")
	c.hold(1, "a", lvmlock.ModeEx)
	c.hold(1, "b", lvmlock.ModeEx)
	peers := []config.Peer{{Name: "kvm1", HostID: 1}, {Name: "kvm2", HostID: 2}, {Name: "kvm3", HostID: 3}}
	peers[0].Address = serve(t, src, ca.Issue("kvm1", x509.ExtKeyUsageServerAuth, false), peers, zerolog.Nop())
	peers[2].Address = serve(t, other, ca.Issue("kvm3", x509.ExtKeyUsageServerAuth, false), peers, zerolog.Nop())
	client := ca.Issue("kvm2", x509.ExtKeyUsageClientAuth, false)
	ho := &peer.Handover{Self: "kvm2", Peers: peers, Timeout: 5 * time.Second, Log: zerolog.Nop(),
		Transport: &peer.HTTPSTransport{Credentials: func() (*peer.Credentials, error) { return client, nil }}}
	dom := &domxml.Domain{Name: "vm1", UUID: uuid1}
	refs := []lvmlock.Ref{{VG: "vg0", LV: "a"}, {VG: "vg0", LV: "b"}}
	source, err := ho.Reserve(context.Background(), dom, 0)
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
	src.lv.SetJob(uuid1, virt.JobNone)
	err = ho.Downgrade(context.Background(), "kvm1", &domxml.Domain{Name: "vm1", UUID: uuid1}, refs)
	if !errors.Is(err, peer.ErrRefused) || !strings.Contains(err.Error(), "kvm1: domain "+uuid1+" has no outgoing migration job") {
		t.Errorf("Downgrade() without a job = %v, want ErrHandoverRefused naming kvm1's reason", err)
	}
}

// TestPeerHoldersOverTLS: lvhook check learns from every peer which LVs it
// holds; a peer that does not answer makes the answer unknown, not empty.
func TestPeerHoldersOverTLS(t *testing.T) {
	ca := peertest.NewPKI(t, "cluster CA")
	c := newTestCluster(t, 3)
	c.hold(1, "a", lvmlock.ModeEx)
	c.hold(1, "iso", lvmlock.ModeSh)
	c.hold(3, "iso", lvmlock.ModeSh)
	peers := []config.Peer{{Name: "kvm1"}, {Name: "kvm2"}, {Name: "kvm3"}}
	peers[0].Address = serve(t, c.hosts[0], ca.Issue("kvm1", x509.ExtKeyUsageServerAuth, false), peers, zerolog.Nop())
	peers[2].Address = serve(t, c.hosts[2], ca.Issue("kvm3", x509.ExtKeyUsageServerAuth, false), peers, zerolog.Nop())
	client := ca.Issue("kvm2", x509.ExtKeyUsageClientAuth, false)
	ph := &peer.Holders{Self: "kvm2", Peers: []config.Peer{peers[0], peers[2]}, Timeout: 5 * time.Second,
		Transport: &peer.HTTPSTransport{Credentials: func() (*peer.Credentials, error) { return client, nil }}}
	ref := func(lv string) lvmlock.Ref { return lvmlock.Ref{VG: "vg0", LV: lv} }
	got, err := ph.Holders(context.Background(), []lvmlock.Ref{ref("a"), ref("b"), ref("iso")})
	if err != nil {
		t.Fatalf("Holders() = %v", err)
	}
	want := map[lvmlock.Ref][]peer.Holder{
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
