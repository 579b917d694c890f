package peer_test

import (
	"context"
	"crypto/x509"
	"errors"
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

// TestCapacityOverTheChannel: the capacity question reaches the service
// over mutual TLS and its answer comes back whole; a body with a field the
// channel does not know is refused before the service.
func TestCapacityOverTheChannel(t *testing.T) {
	svc := newBlockingService()
	svc.releaseAll()
	p := startPeerServer(t, svc, nil)
	tr := &peer.HTTPSTransport{Credentials: func() (*peer.Credentials, error) { return p.client, nil }}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := tr.AskCapacity(ctx, config.Peer{Name: "kvm1", Address: p.addr}, peer.CapacityRequest{TimeoutMS: 2000})
	if err != nil {
		t.Fatalf("AskCapacity: %v", err)
	}
	want := peer.CapacityAnswer{Host: "kvm1", LibvirtUp: true, FreeMemoryBytes: 8 << 30, ActiveDomains: 3}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("AskCapacity (-want +got):\n%s", diff)
	}
	if path := <-svc.entered; path != peer.CapacityPath {
		t.Errorf("the service answered %s", path)
	}
	code := p.rawRequest(t, "POST "+peer.CapacityPath+" HTTP/1.1\r\nHost: kvm1\r\nContent-Length: 27\r\n", func(w io.Writer) {
		io.WriteString(w, `{"timeout_ms":1,"pid":4242}`)
	})
	if code != http.StatusBadRequest {
		t.Errorf("a body with an unknown field: HTTP %d, want 400", code)
	}
	select {
	case path := <-svc.entered:
		t.Errorf("the service answered a malformed %s", path)
	default:
	}
}

// lyingPeer is kvm1 answering every request with status and body, over the
// channel's mutual TLS; it returns kvm2's transport to it.
func lyingPeer(t *testing.T, status int, body string) (*peer.HTTPSTransport, config.Peer) {
	t.Helper()
	ca := peertest.NewPKI(t, "cluster CA")
	peers := []config.Peer{{Name: "kvm1"}, {Name: "kvm2"}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		TLSConfig: peer.ServerTLS(ca.Issue("kvm1", x509.ExtKeyUsageServerAuth, false), peers, zerolog.Nop()),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			io.WriteString(w, body)
		}),
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	client := ca.Issue("kvm2", x509.ExtKeyUsageClientAuth, false)
	return &peer.HTTPSTransport{Credentials: func() (*peer.Credentials, error) { return client, nil }},
		config.Peer{Name: "kvm1", Address: ln.Addr().String()}
}

// TestCapacityFromALyingPeer: an answer that is not JSON, not 200, or whose
// numbers no host has is an error saying what was wrong; the evacuation
// then counts that peer as unreachable.
func TestCapacityFromALyingPeer(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		body   string
		want   string
	}{
		{"negative memory", 200, `{"host":"kvm1","libvirt_up":true,"free_memory_bytes":-5}`,
			"answered a capacity no host has: free_memory_bytes -5 is no host's free memory (0 to 1 PiB)"},
		{"2 PiB free", 200, `{"host":"kvm1","libvirt_up":true,"free_memory_bytes":2251799813685248}`,
			"answered a capacity no host has: free_memory_bytes 2251799813685248 is no host's free memory (0 to 1 PiB)"},
		{"memory beyond int64", 200, `{"host":"kvm1","libvirt_up":true,"free_memory_bytes":1e30}`,
			"answered HTTP 200 without a capacity: json: cannot unmarshal number 1e30"},
		{"negative domains", 200, `{"host":"kvm1","libvirt_up":true,"free_memory_bytes":1024,"active_domains":-1}`,
			"answered a capacity no host has: active_domains -1 is no host's count (0 to 100000)"},
		{"host with a newline", 200, `{"host":"kvm1\nkvm3","libvirt_up":true}`,
			`answered a capacity no host has: host "kvm1\nkvm3" is not a host name`},
		{"garbage", 200, `<html>hello</html>`, "answered HTTP 200 without a capacity: invalid character '<'"},
		{"empty", 200, ``, "answered HTTP 200 without a capacity: EOF"},
		{"server error with a reason", 500, `{"error":"libvirt exploded"}`, "answered HTTP 500: libvirt exploded"},
		{"server error", 503, `{}`, "answered HTTP 503 without a capacity"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, kvm1 := lyingPeer(t, tc.status, tc.body)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			ans, err := tr.AskCapacity(ctx, kvm1, peer.CapacityRequest{TimeoutMS: 1000})
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("AskCapacity = %+v, %v; want an error starting with %q", ans, err, tc.want)
			}
			if ans != (peer.CapacityAnswer{}) {
				t.Errorf("AskCapacity returned %+v beside its error", ans)
			}
		})
	}
}

// TestCapacityUnreachable: a peer that does not answer within the caller's
// bound is an error, as soon as that bound passes.
func TestCapacityUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close() // accepts (the backlog) and never answers
	ca := peertest.NewPKI(t, "cluster CA")
	client := ca.Issue("kvm2", x509.ExtKeyUsageClientAuth, false)
	tr := &peer.HTTPSTransport{Credentials: func() (*peer.Credentials, error) { return client, nil }}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = tr.AskCapacity(ctx, config.Peer{Name: "kvm1", Address: ln.Addr().String()}, peer.CapacityRequest{TimeoutMS: 200})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("AskCapacity of a silent peer = %v, want the deadline", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("AskCapacity took %s, want about its 200ms bound", took)
	}
}
