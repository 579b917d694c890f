package peer_test

import (
	"context"
	"crypto/x509"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lvhook/lvhook/config"
	"github.com/lvhook/lvhook/peer"
	"github.com/lvhook/lvhook/peer/peertest"
	"github.com/rs/zerolog"
)

// TestPeerIdentity: a host is known by the subject alternative names of its
// certificate (DNS names, IP addresses), matched against the configured
// peer's name or address, never by the Common Name; a client certificate
// must carry the clientAuth usage, a server certificate serverAuth.
// serverRefuses is TestPeerIdentity's expectation of a client certificate
// the server rejects.
const serverRefuses = "(the server refuses the client)"

func TestPeerIdentity(t *testing.T) {
	client, server := x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth
	srv := func(c peertest.CertSpec) peertest.CertSpec {
		if c.Usages == nil {
			c.Usages = []x509.ExtKeyUsage{server}
		}
		return c
	}
	cli := func(c peertest.CertSpec) peertest.CertSpec {
		if c.Usages == nil {
			c.Usages = []x509.ExtKeyUsage{client}
		}
		return c
	}
	tests := []struct {
		name           string
		server, client peertest.CertSpec
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
		{name: "DNS names", server: srv(peertest.CertSpec{CN: "kvm1", DNS: []string{"kvm1"}}), client: cli(peertest.CertSpec{CN: "kvm2", DNS: []string{"kvm2"}})},
		{name: "DNS names, another CN", server: srv(peertest.CertSpec{CN: "x", DNS: []string{"KVM1"}}), client: cli(peertest.CertSpec{CN: "y", DNS: []string{"other", "kvm2"}})},
		{name: "client known by its address", server: srv(peertest.CertSpec{DNS: []string{"kvm1"}}),
			client: cli(peertest.CertSpec{CN: "kvm2", IPs: []string{"10.0.0.2"}}), clientAddr: "10.0.0.2:16520"},
		{name: "server known by its address", server: srv(peertest.CertSpec{CN: "kvm1", IPs: []string{"127.0.0.1"}}),
			client: cli(peertest.CertSpec{DNS: []string{"kvm2"}})},
		{name: "client with both usages", server: srv(peertest.CertSpec{DNS: []string{"kvm1"}}),
			client: peertest.CertSpec{DNS: []string{"kvm2"}, Usages: []x509.ExtKeyUsage{server, client}}},

		{name: "client named kvm2 by its CN, another by its SAN", server: srv(peertest.CertSpec{DNS: []string{"kvm1"}}),
			client: cli(peertest.CertSpec{CN: "kvm2", DNS: []string{"intruder"}}), err: serverRefuses},
		{name: "client with an address that is not kvm2's", server: srv(peertest.CertSpec{DNS: []string{"kvm1"}}),
			client: cli(peertest.CertSpec{CN: "kvm2", IPs: []string{"10.0.0.9"}}), clientAddr: "10.0.0.2", err: serverRefuses},
		{name: "server named kvm1 by its CN, another by its SAN", server: srv(peertest.CertSpec{CN: "kvm1", DNS: []string{"kvm3"}}),
			client: cli(peertest.CertSpec{DNS: []string{"kvm2"}}), err: "kvm1"},
		{name: "client without extended key usage", server: srv(peertest.CertSpec{DNS: []string{"kvm1"}}),
			client: peertest.CertSpec{DNS: []string{"kvm2"}, Usages: []x509.ExtKeyUsage{}}, err: serverRefuses},
		{name: "client for any usage", server: srv(peertest.CertSpec{DNS: []string{"kvm1"}}),
			client: peertest.CertSpec{DNS: []string{"kvm2"}, Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}, err: serverRefuses},
		{name: "server without extended key usage", server: peertest.CertSpec{DNS: []string{"kvm1"}, Usages: []x509.ExtKeyUsage{}},
			client: cli(peertest.CertSpec{DNS: []string{"kvm2"}}), err: "serverAuth"},
	}
	ca := peertest.NewPKI(t, "cluster CA")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			svc := newBlockingService()
			svc.releaseAll()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			peers := []config.Peer{{Name: "kvm1", Address: ln.Addr().String()}, {Name: "kvm2", Address: tc.clientAddr}}
			addr, _ := peertest.Serve(t, &peer.Server{Helper: svc, Peers: peers, Log: zerolog.Nop()}, ln, ca.IssueSpec(tc.server))
			cr := ca.IssueSpec(tc.client)
			tr := &peer.HTTPSTransport{Credentials: func() (*peer.Credentials, error) { return cr, nil }}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			ans, err := tr.Ask(ctx, config.Peer{Name: "kvm1", Address: addr}, peer.DowngradePath, req(uuid1, "a"))
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
