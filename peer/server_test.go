package peer_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/lvhook/lvhook/config"
	"github.com/lvhook/lvhook/peer"
	"github.com/lvhook/lvhook/peer/peertest"
	"github.com/rs/zerolog"
)

// blockingService is a PeerService whose answers wait for release, and that
// counts how many requests it holds at once.
type blockingService struct {
	entered chan string   // the path of each request that came in
	release chan struct{} // one answer per value (closed: all)
	all     sync.Once
	mu      sync.Mutex
	in, max int
}

func newBlockingService() *blockingService {
	return &blockingService{entered: make(chan string, 16), release: make(chan struct{}, 16)}
}

// releaseAll lets every request, present and future, be answered.
func (b *blockingService) releaseAll() { b.all.Do(func() { close(b.release) }) }

func (b *blockingService) hold(path string) {
	b.mu.Lock()
	b.in++
	b.max = max(b.max, b.in)
	b.mu.Unlock()
	b.entered <- path
	<-b.release
	b.mu.Lock()
	b.in--
	b.mu.Unlock()
}

func (b *blockingService) Reserve(_ context.Context, _ string, req peer.Request) peer.Answer {
	b.hold(peer.ReservePath)
	return peer.Answer{Host: "kvm1", Granted: true}
}

func (b *blockingService) Downgrade(_ context.Context, _ string, req peer.Request) peer.Answer {
	b.hold(peer.DowngradePath)
	return peer.Answer{Host: "kvm1", Granted: true}
}

func (b *blockingService) Holds(context.Context, peer.HoldersRequest) peer.HoldersAnswer {
	b.hold(peer.HoldersPath)
	return peer.HoldersAnswer{Host: "kvm1", Holds: []peer.Hold{}}
}

func (b *blockingService) Capacity(context.Context) peer.CapacityAnswer {
	b.hold(peer.CapacityPath)
	return peer.CapacityAnswer{Host: "kvm1", LibvirtUp: true, FreeMemoryBytes: 8 << 30, ActiveDomains: 3}
}

func (b *blockingService) maxIn() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.max
}

// peerSetup is a peer server for kvm1 on loopback and kvm2's client
// credentials.
type peerSetup struct {
	addr   string
	stop   func() error
	client *peer.Credentials
	ca     *peertest.PKI
}

func startPeerServer(t *testing.T, svc peer.Service, configure func(s *peer.Server)) *peerSetup {
	t.Helper()
	ca := peertest.NewPKI(t, "cluster CA")
	peers := []config.Peer{{Name: "kvm1"}, {Name: "kvm2"}}
	srv := &peer.Server{Helper: svc, Peers: peers, MaxWait: 5 * time.Second, Log: zerolog.Nop()}
	if configure != nil {
		configure(srv)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr, stop := peertest.Serve(t, srv, ln, ca.Issue("kvm1", x509.ExtKeyUsageServerAuth, false))
	return &peerSetup{addr: addr, stop: stop, client: ca.Issue("kvm2", x509.ExtKeyUsageClientAuth, false), ca: ca}
}

// dialTLS opens a TLS connection to the server as kvm2, offering protos.
func (p *peerSetup) dialTLS(t *testing.T, protos ...string) *tls.Conn {
	t.Helper()
	cfg := peer.ClientTLS(p.client, config.Peer{Name: "kvm1"})
	cfg.NextProtos = protos
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", p.addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// waitClosed fails unless the server closes conn within d.
func waitClosed(t *testing.T, conn net.Conn, d time.Duration, what string) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("%s: still open after %v", what, d)
	}
}

// TestServerCutsSlowClients: a connection that sends nothing, or its
// headers a byte at a time, is closed after the header timeout.
func TestServerCutsSlowClients(t *testing.T) {
	p := startPeerServer(t, newBlockingService(), func(s *peer.Server) { s.HeaderTimeout = 300 * time.Millisecond })

	silent, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	slow := p.dialTLS(t, "http/1.1")
	if _, err := io.WriteString(slow, "POST "+peer.HoldersPath+" HTTP/1.1\r\nHost: kvm1\r\n"); err != nil {
		t.Fatal(err)
	}
	stopDribble := make(chan struct{})
	defer close(stopDribble)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stopDribble:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if _, err := fmt.Fprintf(slow, "X-%d: y\r\n", i); err != nil {
				return
			}
		}
	}()
	waitClosed(t, silent, 3*time.Second, "connection without a handshake")
	waitClosed(t, slow, 3*time.Second, "headers sent slowly")
}

// TestServerLimitsConnections: beyond MaxConns, a connection waits until one
// served is closed.
func TestServerLimitsConnections(t *testing.T) {
	svc := newBlockingService()
	svc.releaseAll()
	p := startPeerServer(t, svc, func(s *peer.Server) { s.MaxConns = 1 })
	tr := &peer.HTTPSTransport{Credentials: func() (*peer.Credentials, error) { return p.client, nil }}
	kvm1 := config.Peer{Name: "kvm1", Address: p.addr}

	idle, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	// The idle connection is accepted first and takes the one slot.
	time.Sleep(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if _, err := tr.AskHolders(ctx, kvm1, peer.HoldersRequest{TimeoutMS: 1000}); err == nil {
		t.Errorf("AskHolders() beside an idle connection at MaxConns 1 answered, want it kept waiting")
	}
	idle.Close()
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := tr.AskHolders(ctx, kvm1, peer.HoldersRequest{TimeoutMS: 1000}); err != nil {
		t.Errorf("AskHolders() once the slot is free = %v", err)
	}
}

// rawRequest sends a request with the given headers on a new TLS connection,
// body written by a goroutine (errors ignored: the server may stop reading),
// and returns the status.
func (p *peerSetup) rawRequest(t *testing.T, head string, body func(w io.Writer)) int {
	t.Helper()
	resp := p.rawResponse(t, head, body)
	resp.Body.Close()
	return resp.StatusCode
}

// rawResponse is rawRequest's answer, body unread (the caller closes it).
func (p *peerSetup) rawResponse(t *testing.T, head string, body ...func(w io.Writer)) *http.Response {
	t.Helper()
	conn := p.dialTLS(t, "http/1.1")
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, head+"\r\n"); err != nil {
		t.Fatal(err)
	}
	for _, b := range body {
		if b != nil {
			go b(conn)
		}
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	return resp
}

// TestServerRefusesOversizedBodies: a body over 1 MiB, announced or
// chunked, gets 413 and is not read further.
func TestServerRefusesOversizedBodies(t *testing.T) {
	svc := newBlockingService()
	svc.releaseAll()
	p := startPeerServer(t, svc, nil)
	chunked := func(w io.Writer) {
		chunk := strings.Repeat(" ", 64<<10)
		for range 40 {
			if _, err := fmt.Fprintf(w, "%x\r\n%s\r\n", len(chunk), chunk); err != nil {
				return
			}
		}
		io.WriteString(w, "0\r\n\r\n")
	}
	for _, path := range []string{peer.HoldersPath, peer.DowngradePath} {
		head := "POST " + path + " HTTP/1.1\r\nHost: kvm1\r\nContent-Type: application/json\r\n"
		if got := p.rawRequest(t, head+"Content-Length: 2097152\r\n", nil); got != http.StatusRequestEntityTooLarge {
			t.Errorf("POST %s announcing 2 MiB = %d, want 413", path, got)
		}
		if got := p.rawRequest(t, head+"Transfer-Encoding: chunked\r\n", chunked); got != http.StatusRequestEntityTooLarge {
			t.Errorf("POST %s chunked 2.5 MiB = %d, want 413", path, got)
		}
	}
	if n := svc.maxIn(); n != 0 {
		t.Errorf("%d requests reached the service, want none", n)
	}
}

// TestServerBoundsHolderReads: at most MaxHolderReads holders questions are
// answered at once (they compete for lvmlockd's one dump socket); another
// waits within its timeout, then gets 503.
func TestServerBoundsHolderReads(t *testing.T) {
	svc := newBlockingService()
	p := startPeerServer(t, svc, func(s *peer.Server) { s.MaxHolderReads = 2 })
	t.Cleanup(svc.releaseAll) // before the server stops: it drains
	tr := &peer.HTTPSTransport{Credentials: func() (*peer.Credentials, error) { return p.client, nil }}
	kvm1 := config.Peer{Name: "kvm1", Address: p.addr}
	ask := func(timeout time.Duration) chan error {
		done := make(chan error, 1)
		go func() {
			_, err := tr.AskHolders(context.Background(), kvm1, peer.HoldersRequest{TimeoutMS: timeout.Milliseconds()})
			done <- err
		}()
		return done
	}
	first, second := ask(10*time.Second), ask(10*time.Second)
	for range 2 {
		<-svc.entered
	}
	// A third, while two are read: refused once its own timeout passes.
	start := time.Now()
	var third error
	select {
	case third = <-ask(300 * time.Millisecond):
	case path := <-svc.entered:
		t.Fatalf("a third %s read began beside two", path)
	}
	if third == nil || !strings.Contains(third.Error(), "503") {
		t.Errorf("third AskHolders() = %v, want HTTP 503", third)
	}
	if took := time.Since(start); took < 250*time.Millisecond {
		t.Errorf("third refused after %v, want it to wait its timeout first", took)
	}
	// A fourth with time to wait is answered once a slot frees.
	fourth := ask(10 * time.Second)
	select {
	case path := <-svc.entered:
		t.Errorf("a third %s read began beside two", path)
	case <-time.After(200 * time.Millisecond):
	}
	svc.release <- struct{}{}
	<-svc.entered
	svc.releaseAll()
	for i, done := range []chan error{first, second, fourth} {
		if err := <-done; err != nil {
			t.Errorf("AskHolders() #%d = %v", i+1, err)
		}
	}
	if n := svc.maxIn(); n != 2 {
		t.Errorf("at most %d reads at once, want 2", n)
	}
}

// TestPeerChannelIsHTTP1: neither end negotiates HTTP/2 (one request per
// connection needs nothing more, and h2 brings its own resource bounds).
func TestPeerChannelIsHTTP1(t *testing.T) {
	p := startPeerServer(t, newBlockingService(), nil)
	conn := p.dialTLS(t, "h2", "http/1.1")
	if err := conn.Handshake(); err != nil {
		t.Fatal(err)
	}
	if got := conn.ConnectionState().NegotiatedProtocol; got != "http/1.1" {
		t.Errorf("server negotiated %q, want http/1.1", got)
	}

	// The client offers http/1.1 only.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	offered := make(chan []string, 1)
	cfg := peer.ServerTLS(p.ca.Issue("kvm1", x509.ExtKeyUsageServerAuth, false), nil, zerolog.Nop())
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		offered <- hello.SupportedProtos
		return nil, errors.New("enough")
	}
	go func() {
		c, err := ln.Accept()
		if err == nil {
			tls.Server(c, cfg).Handshake()
			c.Close()
		}
	}()
	tr := &peer.HTTPSTransport{Credentials: func() (*peer.Credentials, error) { return p.client, nil }}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tr.Ask(ctx, config.Peer{Name: "kvm1", Address: ln.Addr().String()}, peer.DowngradePath, req(uuid1, "a"))
	if diff := cmp.Diff([]string{"http/1.1"}, <-offered); diff != "" {
		t.Errorf("client ALPN (-want +got):\n%s", diff)
	}
}

// TestServerTimeouts: every phase of a connection is bounded, and the
// bounds leave a request its whole wait.
func TestServerTimeouts(t *testing.T) {
	s := &peer.Server{MaxWait: 40 * time.Second}
	h := s.HTTPServer(&tls.Config{})
	for name, d := range map[string]time.Duration{"ReadHeaderTimeout": h.ReadHeaderTimeout, "ReadTimeout": h.ReadTimeout,
		"WriteTimeout": h.WriteTimeout, "IdleTimeout": h.IdleTimeout} {
		if d <= 0 {
			t.Errorf("%s = %v, want a bound", name, d)
		}
	}
	if h.WriteTimeout < h.ReadTimeout+s.MaxWait {
		t.Errorf("WriteTimeout %v < ReadTimeout %v + MaxWait %v: an answer could be cut", h.WriteTimeout, h.ReadTimeout, s.MaxWait)
	}
	if h.TLSNextProto == nil || len(h.TLSNextProto) != 0 {
		t.Errorf("TLSNextProto = %v, want empty and non-nil (no h2)", h.TLSNextProto)
	}
}

// TestServeDrainsOnCancel: when its context ends (SIGTERM), the server stops
// accepting connections but answers the request in flight before Serve
// returns: a downgrade done must reach the host that asked.
func TestServeDrainsOnCancel(t *testing.T) {
	svc := newBlockingService()
	t.Cleanup(svc.releaseAll)
	p := startPeerServer(t, svc, nil)
	tr := &peer.HTTPSTransport{Credentials: func() (*peer.Credentials, error) { return p.client, nil }}
	type result struct {
		ans peer.Answer
		err error
	}
	asked := make(chan result, 1)
	go func() {
		ans, err := tr.Ask(context.Background(), config.Peer{Name: "kvm1", Address: p.addr}, peer.DowngradePath, req(uuid1, "a"))
		asked <- result{ans, err}
	}()
	<-svc.entered

	served := make(chan error, 1)
	go func() { served <- p.stop() }()
	deadline := time.Now().Add(3 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", p.addr, time.Second)
		if err != nil {
			break // refused: the listener is closed
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("new connections still accepted 3 s after the cancel")
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case err := <-served:
		t.Fatalf("Serve returned (%v) with a request in flight", err)
	case <-time.After(200 * time.Millisecond):
	}
	svc.releaseAll()
	if r := <-asked; r.err != nil || !r.ans.Granted {
		t.Errorf("Ask() in flight at the cancel = %+v, %v; want its answer", r.ans, r.err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve() = %v", err)
	}
}

// TestServerRoutes: only POST to the channel's paths reaches the service;
// another method on them is 405 (Allow: POST), another path 404, both with
// a JSON answer that says why.
func TestServerRoutes(t *testing.T) {
	svc := newBlockingService()
	svc.releaseAll()
	p := startPeerServer(t, svc, nil)
	for _, tc := range []struct {
		head string
		code int
	}{
		{"GET " + peer.DowngradePath + " HTTP/1.1\r\nHost: kvm1\r\n", http.StatusMethodNotAllowed},
		{"PUT " + peer.ReservePath + " HTTP/1.1\r\nHost: kvm1\r\nContent-Length: 0\r\n", http.StatusMethodNotAllowed},
		{"DELETE " + peer.HoldersPath + " HTTP/1.1\r\nHost: kvm1\r\n", http.StatusMethodNotAllowed},
		{"GET " + peer.CapacityPath + " HTTP/1.1\r\nHost: kvm1\r\n", http.StatusMethodNotAllowed},
		{"POST /v1/downgrade/x HTTP/1.1\r\nHost: kvm1\r\nContent-Length: 0\r\n", http.StatusNotFound},
		{"POST /v2/downgrade HTTP/1.1\r\nHost: kvm1\r\nContent-Length: 0\r\n", http.StatusNotFound},
		{"GET / HTTP/1.1\r\nHost: kvm1\r\n", http.StatusNotFound},
		{"POST /v1//reserve HTTP/1.1\r\nHost: kvm1\r\nContent-Length: 0\r\n", http.StatusNotFound},
		{"POST /v1/./downgrade HTTP/1.1\r\nHost: kvm1\r\nContent-Length: 0\r\n", http.StatusNotFound},
		{"POST /x/../v1/reserve HTTP/1.1\r\nHost: kvm1\r\nContent-Length: 0\r\n", http.StatusNotFound},
		{"POST //v1/reserve HTTP/1.1\r\nHost: kvm1\r\nContent-Length: 0\r\n", http.StatusNotFound},
		{"POST /v1/%72eserve HTTP/1.1\r\nHost: kvm1\r\nContent-Length: 0\r\n", http.StatusNotFound},
	} {
		resp := p.rawResponse(t, tc.head)
		var ans peer.Answer
		err := json.NewDecoder(resp.Body).Decode(&ans)
		resp.Body.Close()
		if resp.StatusCode != tc.code || err != nil || ans.Reason == "" || ans.Granted {
			t.Errorf("%q: HTTP %d, answer %+v (%v); want %d with a JSON reason", strings.SplitN(tc.head, "\r", 2)[0], resp.StatusCode, ans, err, tc.code)
		}
		if tc.code == http.StatusMethodNotAllowed && resp.Header.Get("Allow") != http.MethodPost {
			t.Errorf("%q: Allow %q, want POST", tc.head, resp.Header.Get("Allow"))
		}
	}
	select {
	case path := <-svc.entered:
		t.Errorf("the service got a %s request", path)
	default:
	}
}
