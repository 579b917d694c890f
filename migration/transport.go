package migration

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/lvhook/lvhook/config"
	"github.com/rs/zerolog"
)

// The peer channel: JSON over HTTPS, mutual TLS. A live migration's
// handover is one POST of a Request to ReservePath (the destination's migrate
// begin), then one to DowngradePath (its prepare); the answer is an Answer,
// with status 200 for a decision (granted or not) and 4xx when the request
// itself is refused. HoldersPath is check's read-only question.
const (
	ReservePath   = "/v1/reserve"
	DowngradePath = "/v1/downgrade"
	// DefaultPort is used for a peer address without a port.
	DefaultPort = "16520"
	maxBody     = 1 << 20
)

// Credentials are this host's TLS identity and the cluster's CA.
type Credentials struct {
	Cert tls.Certificate
	CA   *x509.CertPool
}

// LoadCredentials reads a PEM CA bundle, certificate and key (libvirt's PKI
// files by default, see hook.DefaultConfig).
func LoadCredentials(caFile, certFile, keyFile string) (*Credentials, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("peer TLS: CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("peer TLS: %s holds no PEM certificate", caFile)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("peer TLS: certificate %s and key %s: %w", certFile, keyFile, err)
	}
	return &Credentials{Cert: cert, CA: pool}, nil
}

// verifyChain checks a presented chain against the CA for one usage, which
// the certificate must list itself: x509's check alone lets a certificate
// without the extension, or with anyExtendedKeyUsage, serve any use. Go's
// host name check is not used: a peer is matched by name or by address
// (certMatches).
func verifyChain(certs []*x509.Certificate, ca *x509.CertPool, usage x509.ExtKeyUsage) (*x509.Certificate, error) {
	if len(certs) == 0 {
		return nil, errors.New("no certificate presented")
	}
	leaf := certs[0]
	if !slices.Contains(leaf.ExtKeyUsage, usage) {
		return nil, fmt.Errorf("certificate %s is not for %s use (extended key usage)", describeCert(leaf), usageName(usage))
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return nil, err
	}
	return leaf, nil
}

func usageName(u x509.ExtKeyUsage) string {
	if u == x509.ExtKeyUsageServerAuth {
		return "serverAuth"
	}
	return "clientAuth"
}

// certMatches reports whether the subject alternative names of c include id,
// a DNS name (exactly, in any case) or an IP address. The Common Name does
// not count: it is no host name for TLS (RFC 6125, and Go since 1.15), and
// CAs that check the names they sign check the SANs.
func certMatches(c *x509.Certificate, id string) bool {
	if ip := net.ParseIP(strings.Trim(id, "[]")); ip != nil {
		return slices.ContainsFunc(c.IPAddresses, ip.Equal)
	}
	id = strings.TrimSuffix(id, ".")
	return id != "" && slices.ContainsFunc(c.DNSNames, func(n string) bool {
		return strings.EqualFold(strings.TrimSuffix(n, "."), id)
	})
}

// peerIDs are what a peer's certificate may name it by: its configured name
// and the host of its address.
func peerIDs(p config.Peer) []string {
	ids := []string{p.Name}
	host := p.Address
	if h, _, err := net.SplitHostPort(p.Address); err == nil {
		host = h
	}
	if host = strings.Trim(host, "[]"); host != "" && !strings.EqualFold(host, p.Name) {
		ids = append(ids, host)
	}
	return ids
}

// describeCert renders a certificate's names for a log line or an error.
func describeCert(c *x509.Certificate) string {
	return fmt.Sprintf("CN=%q DNS=%q IP=%v", c.Subject.CommonName, c.DNSNames, c.IPAddresses)
}

// PeerName returns the configured peer a certificate names, if any.
func PeerName(c *x509.Certificate, peers []config.Peer) (string, bool) {
	for _, p := range peers {
		if slices.ContainsFunc(peerIDs(p), func(id string) bool { return certMatches(c, id) }) {
			return p.Name, true
		}
	}
	return "", false
}

// ServerTLS is the peer server's TLS configuration: a client certificate is
// required, signed by the CA for client use and naming a configured peer;
// anything else fails the handshake.
func ServerTLS(cr *Credentials, peers []config.Peer, log zerolog.Logger) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cr.Cert},
		ClientAuth:   tls.RequireAnyClientCert,
		NextProtos:   []string{"http/1.1"},
		VerifyConnection: func(cs tls.ConnectionState) error {
			c, err := verifyChain(cs.PeerCertificates, cr.CA, x509.ExtKeyUsageClientAuth)
			if err != nil {
				log.Warn().Err(err).Msg("peer certificate refused")
				return err
			}
			if _, ok := PeerName(c, peers); !ok {
				err := fmt.Errorf("certificate %s names no configured peer in its subject alternative names", describeCert(c))
				log.Warn().Err(err).Msg("peer certificate refused")
				return err
			}
			return nil
		},
	}
}

// clientTLS is the configuration to reach peer: its server certificate must
// be signed by the CA for server use and name it, by name or address.
func clientTLS(cr *Credentials, peer config.Peer) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cr.Cert},
		ServerName:   peer.Name,
		NextProtos:   []string{"http/1.1"},
		// Verified in VerifyConnection, which accepts the peer's name or
		// its address.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			c, err := verifyChain(cs.PeerCertificates, cr.CA, x509.ExtKeyUsageServerAuth)
			if err != nil {
				return err
			}
			ids := peerIDs(peer)
			if slices.ContainsFunc(ids, func(id string) bool { return certMatches(c, id) }) {
				return nil
			}
			return fmt.Errorf("server certificate %s names neither %s in its subject alternative names", describeCert(c), strings.Join(ids, " nor "))
		},
	}
}

// HTTPSTransport asks peers over the HTTPS peer channel.
type HTTPSTransport struct {
	// Credentials loads the client identity; the hook loads it only when
	// a migration needs it, and once.
	Credentials func() (*Credentials, error)
}

// LazyCredentials loads credentials on first use and keeps the result.
func LazyCredentials(caFile, certFile, keyFile string) func() (*Credentials, error) {
	return sync.OnceValues(func() (*Credentials, error) { return LoadCredentials(caFile, certFile, keyFile) })
}

// errLocal marks a failure on this host (its TLS files): asking again
// cannot help.
var errLocal = errors.New("cannot ask")

// Ask implements Transport.
func (t *HTTPSTransport) Ask(ctx context.Context, peer config.Peer, path string, req Request) (Answer, error) {
	cr, err := t.Credentials()
	if err != nil {
		return Answer{}, fmt.Errorf("%w: %w", errLocal, err)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return Answer{}, err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+peerAddr(peer.Address)+path, bytes.NewReader(body))
	if err != nil {
		return Answer{}, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := peerClient(cr, peer).Do(hreq)
	if err != nil {
		return Answer{}, err
	}
	defer resp.Body.Close()
	var ans Answer
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxBody)).Decode(&ans); err != nil {
		return Answer{}, fmt.Errorf("answered HTTP %d without a decision: %w", resp.StatusCode, err)
	}
	if resp.StatusCode != http.StatusOK && ans.Reason == "" {
		return Answer{}, fmt.Errorf("answered HTTP %d", resp.StatusCode)
	}
	return ans, nil
}

// peerClient is the HTTP client of one request to peer: HTTP/1.1 (as the
// server), one connection per request.
func peerClient(cr *Credentials, peer config.Peer) *http.Client {
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig: clientTLS(cr, peer),
		// A non-nil empty map keeps h2 off whatever the defaults.
		TLSNextProto:      map[string]func(string, *tls.Conn) http.RoundTripper{},
		DisableKeepAlives: true,
	}}
}

// peerAddr adds the default port to an address without one.
func peerAddr(a string) string {
	if _, _, err := net.SplitHostPort(a); err == nil {
		return a
	}
	return net.JoinHostPort(strings.Trim(a, "[]"), DefaultPort)
}

// PeerService answers the peers' requests; *Helper is one.
type PeerService interface {
	Reserve(ctx context.Context, peer string, req Request) Answer
	Downgrade(ctx context.Context, peer string, req Request) Answer
	Holds(ctx context.Context, req HoldersRequest) HoldersAnswer
}

// Server is the peer server: it authenticates the asking host by its client
// certificate, bounds the request by its deadline, and logs request and
// answer. It faces the network as root's daemon, so every resource a client
// can hold is bounded: connections, the time of each phase, body size, and
// concurrent lock reads. The zero values of the bounds mean the defaults.
type Server struct {
	Helper PeerService
	Peers  []config.Peer
	// MaxWait bounds the work on one request whatever it asks (default 30 s).
	MaxWait time.Duration
	// MaxConns bounds the connections open at once (default 32); further
	// ones wait in the listen backlog. Peers open one per request.
	MaxConns int
	// MaxHolderReads bounds the holders questions answered at once
	// (default 2): each runs `lvmlockctl -i`, and lvmlockd has one dump
	// socket, so more at once would only make each other, and the hooks'
	// own reads, retry. Others wait within their timeout, then get 503.
	MaxHolderReads int
	// HeaderTimeout bounds the TLS handshake and the reading of the
	// headers (default 10 s); the body gets as long again.
	HeaderTimeout time.Duration
	Log           zerolog.Logger

	slotsOnce   sync.Once
	holderSlots chan struct{}
}

// Defaults of the Server's bounds.
const (
	defaultMaxWait        = 30 * time.Second
	defaultMaxConns       = 32
	defaultMaxHolderReads = 2
	defaultHeaderTimeout  = 10 * time.Second
)

func (s *Server) maxWait() time.Duration { return cmp.Or(s.MaxWait, defaultMaxWait) }

// httpServer is the http.Server of Serve.
func (s *Server) httpServer(cfg *tls.Config) *http.Server {
	header := cmp.Or(s.HeaderTimeout, defaultHeaderTimeout)
	read := 2 * header
	return &http.Server{
		Handler:   s,
		TLSConfig: cfg,
		// HTTP/1.1 only: a non-nil empty map keeps ServeTLS from adding h2.
		TLSNextProto:      map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ReadHeaderTimeout: header,
		ReadTimeout:       read,
		// Counted from the end of the headers: the body, the work, and the
		// answer.
		WriteTimeout: read + s.maxWait() + 5*time.Second,
		// Peers do not keep connections alive; one that stays is cut.
		IdleTimeout: header,
		ErrorLog:    stdlog.New(logWriter{s.Log}, "", 0),
	}
}

// decodeBody reads a request's JSON body into v and checks it; on failure it
// returns the HTTP status to answer: 413 for a body over maxBody, else 400.
func decodeBody(w http.ResponseWriter, r *http.Request, v any, check func() error) (int, error) {
	if r.ContentLength > maxBody {
		return http.StatusRequestEntityTooLarge, fmt.Errorf("body of %d bytes, more than %d", r.ContentLength, maxBody)
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return http.StatusRequestEntityTooLarge, fmt.Errorf("body larger than %d bytes", maxBody)
		}
		return http.StatusBadRequest, err
	}
	if err := check(); err != nil {
		return http.StatusBadRequest, err
	}
	// net/http cancels the request's context when the read deadline
	// (ReadTimeout) passes while the handler works; the work has its own
	// bound, and a request read whole needs none.
	_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
	return 0, nil
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	log := s.Log.With().Str("remote", r.RemoteAddr).Logger()
	answer := func(code int, ans Answer) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(ans)
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		answer(http.StatusUnauthorized, Answer{Reason: "a client certificate is required"})
		return
	}
	peer, ok := PeerName(r.TLS.PeerCertificates[0], s.Peers)
	if !ok {
		// The handshake already refuses these; kept for a Server used
		// behind another TLS configuration.
		log.Warn().Str("certificate", describeCert(r.TLS.PeerCertificates[0])).Msg("request refused: not a configured peer")
		answer(http.StatusForbidden, Answer{Reason: "not a configured peer"})
		return
	}
	log = log.With().Str("peer", peer).Logger()
	if r.Method == http.MethodPost && r.URL.Path == HoldersPath {
		s.holders(w, r, log)
		return
	}
	decide := map[string]func(context.Context, string, Request) Answer{
		ReservePath: s.Helper.Reserve, DowngradePath: s.Helper.Downgrade}[r.URL.Path]
	if r.Method != http.MethodPost || decide == nil {
		log.Warn().Str("method", r.Method).Str("path", r.URL.Path).Msg("request refused: unknown request")
		answer(http.StatusNotFound, Answer{Reason: "unknown request " + r.Method + " " + r.URL.Path})
		return
	}
	var req Request
	if code, err := decodeBody(w, r, &req, func() error { return req.check(r.URL.Path) }); err != nil {
		log.Warn().Err(err).Msg("request refused: malformed")
		answer(code, Answer{Reason: "malformed request: " + err.Error()})
		return
	}
	lvs := make([]string, len(req.LVs))
	for i, l := range req.LVs {
		lvs[i] = l.VG + "/" + l.LV
	}
	log = log.With().Str("request", r.URL.Path).Logger()
	log.Info().Str("domain", req.Domain).Str("uuid", req.UUID).Strs("lvs", lvs).Int64("timeout_ms", req.TimeoutMS).
		Msg("request received")
	if req.TimeoutMS <= 0 {
		answer(http.StatusOK, Answer{Reason: "the request carries no deadline"})
		return
	}
	wait := min(time.Duration(req.TimeoutMS)*time.Millisecond, s.maxWait())
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	ans := decide(ctx, peer, req)
	log.Info().Str("domain", req.Domain).Str("uuid", req.UUID).Bool("granted", ans.Granted).Str("reason", ans.Reason).
		Dur("took", time.Since(start)).Msg("answer sent")
	answer(http.StatusOK, ans)
}

// holders answers the read-only holders question of `lvhook check`.
func (s *Server) holders(w http.ResponseWriter, r *http.Request, log zerolog.Logger) {
	var req HoldersRequest
	w.Header().Set("Content-Type", "application/json")
	if code, err := decodeBody(w, r, &req, func() error { return req.check() }); err != nil {
		log.Warn().Err(err).Msg("holders request refused: malformed")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(HoldersAnswer{Error: "malformed request: " + err.Error()})
		return
	}
	wait := s.maxWait()
	if req.TimeoutMS > 0 {
		wait = min(wait, time.Duration(req.TimeoutMS)*time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	s.slotsOnce.Do(func() { s.holderSlots = make(chan struct{}, cmp.Or(s.MaxHolderReads, defaultMaxHolderReads)) })
	select {
	case s.holderSlots <- struct{}{}:
		defer func() { <-s.holderSlots }()
	case <-ctx.Done():
		log.Warn().Int("reads", cap(s.holderSlots)).Msg("holders request refused: busy")
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = json.NewEncoder(w).Encode(HoldersAnswer{Error: fmt.Sprintf("busy: %d other holders questions took the whole wait", cap(s.holderSlots))})
		return
	}
	ans := s.Helper.Holds(ctx, req)
	log.Debug().Int("lvs", len(req.LVs)).Int("held", len(ans.Holds)).Str("error", ans.Error).Msg("holders answered")
	_ = json.NewEncoder(w).Encode(ans)
}

// Serve serves the peer channel on ln until ctx ends. Then it closes ln
// and answers the requests in flight before it returns: a source that has
// converted its LVs to sh must tell the destination so. The work of a
// request is bounded by MaxWait, and so is the wait, plus 5 s (15 s with
// the default peer_timeout, within lvhook.service's TimeoutStopSec); a
// request still being read then has not begun and is cut.
func (s *Server) Serve(ctx context.Context, ln net.Listener, cfg *tls.Config) error {
	srv := s.httpServer(cfg)
	ln = newLimitListener(ln, cmp.Or(s.MaxConns, defaultMaxConns))
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.maxWait()+5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			s.Log.Warn().Err(err).Msg("peer server: requests still in flight cut")
			_ = srv.Close()
		}
	}()
	err := srv.ServeTLS(ln, "", "")
	if errors.Is(err, http.ErrServerClosed) {
		<-done
		return nil
	}
	return err
}

// logWriter sends net/http's own messages (TLS handshake failures among
// them) to the log.
type logWriter struct{ log zerolog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.log.Warn().Str("error", strings.TrimSpace(string(p))).Msg("peer server")
	return len(p), nil
}
