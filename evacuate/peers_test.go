package evacuate

import (
	"context"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"

	"github.com/lvhook/lvhook/config"
	"github.com/lvhook/lvhook/peer"
	"github.com/lvhook/lvhook/peer/peertest"
)

// lyingService is a peer's lock helper whose capacity answer is a lie.
type lyingService struct{ ans peer.CapacityAnswer }

func (l lyingService) Reserve(context.Context, string, peer.Request) peer.Answer {
	return peer.Answer{}
}
func (l lyingService) Downgrade(context.Context, string, peer.Request) peer.Answer {
	return peer.Answer{}
}
func (l lyingService) Holds(context.Context, peer.HoldersRequest) peer.HoldersAnswer {
	return peer.HoldersAnswer{}
}
func (l lyingService) Capacity(context.Context) peer.CapacityAnswer { return l.ans }

// TestPeersThatLie: over the real peer channel (mutual TLS), a peer that
// claims negative or impossible free memory, or answers garbage, or
// nothing, is unreachable for the evacuation, with a line saying why; the
// one that answers sensibly gets the domains.
func TestPeersThatLie(t *testing.T) {
	ca := peertest.NewPKI(t, "cluster CA")
	names := []string{"host1", "host2", "host3", "host4", "host5"}
	var peers []config.Peer
	for _, n := range names {
		peers = append(peers, config.Peer{Name: n})
	}
	serve := func(name string, svc peer.Service) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &peer.Server{Helper: svc, Peers: peers, MaxWait: 5 * time.Second, Log: zerolog.Nop()}
		addr, _ := peertest.Serve(t, srv, ln, ca.Issue(name, x509.ExtKeyUsageServerAuth, false))
		return addr
	}
	addrs := map[string]string{
		"host2": serve("host2", lyingService{peer.CapacityAnswer{Host: "host2", LibvirtUp: true, FreeMemoryBytes: -1}}),
		"host3": serve("host3", lyingService{peer.CapacityAnswer{Host: "host3", LibvirtUp: true, FreeMemoryBytes: 1 << 60}}),
		"host5": serve("host5", lyingService{peer.CapacityAnswer{Host: "host5", LibvirtUp: true, FreeMemoryBytes: 32 << 30}}),
	}
	// host4 answers garbage, with a valid certificate.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	garbage := &http.Server{TLSConfig: peer.ServerTLS(ca.Issue("host4", x509.ExtKeyUsageServerAuth, false), peers, zerolog.Nop()),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "{\"free_memory_bytes\": lots}") })}
	go garbage.ServeTLS(ln, "", "")
	t.Cleanup(func() { garbage.Close() })
	addrs["host4"] = ln.Addr().String()

	w := newWorld(t)
	w.e.Config.Daemon.Peers = nil
	for _, n := range names {
		w.e.Config.Daemon.Peers = append(w.e.Config.Daemon.Peers, config.Peer{Name: n, Address: addrs[n]})
	}
	client := ca.Issue("host1", x509.ExtKeyUsageClientAuth, false)
	w.e.Peers = &peer.HTTPSTransport{Credentials: func() (*peer.Credentials, error) { return client, nil }}
	w.run("web", 1, "", 1)
	rep := w.evacuate(Options{})
	if diff := cmp.Diff([]string{"web migrate host5 [migrate] migrated"}, results(rep)); diff != "" {
		t.Errorf("results (-want +got):\n%s", diff)
	}
	for _, line := range []string{
		"peer host2: unreachable (answered a capacity no host has: free_memory_bytes -1 is no host's free memory (0 to 1 PiB)): it takes no domain",
		"peer host3: unreachable (answered a capacity no host has: free_memory_bytes 1152921504606846976 is no host's free memory (0 to 1 PiB)): it takes no domain",
		"peer host4: unreachable (answered HTTP 200 without a capacity: invalid character 'l' looking for beginning of value): it takes no domain",
		"peer host5: 32.0 GiB free, 0 domains running",
	} {
		if !strings.Contains(w.out.String(), line) {
			t.Errorf("progress lacks %q:\n%s", line, w.out.String())
		}
	}
	usable := map[string]bool{}
	for _, p := range rep.Peers {
		usable[p.Name] = p.Usable
	}
	if diff := cmp.Diff(map[string]bool{"host2": false, "host3": false, "host4": false, "host5": true}, usable); diff != "" {
		t.Errorf("usable peers (-want +got):\n%s", diff)
	}
}
