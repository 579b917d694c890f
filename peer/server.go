package peer

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/lvhook/lvhook/config"
	"github.com/rs/zerolog"
)

// Service answers the peers' requests (the lock helper, migration.Helper).
type Service interface {
	Reserve(ctx context.Context, peer string, req Request) Answer
	Downgrade(ctx context.Context, peer string, req Request) Answer
	Holds(ctx context.Context, req HoldersRequest) HoldersAnswer
	Capacity(ctx context.Context) CapacityAnswer
}

// Server is the peer server: it authenticates the asking host by its client
// certificate, bounds the request by its deadline, and logs request and
// answer. It faces the network as root's daemon, so every resource a client
// can hold is bounded: connections, the time of each phase, body size, and
// concurrent lock reads. The zero values of the bounds mean the defaults.
type Server struct {
	Helper Service
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
	muxOnce     sync.Once
	mux         *http.ServeMux
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

// ServeHTTP authenticates the asking host by its client certificate, then
// routes the request: POST to one of the paths of wire.go, nothing else.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	log := s.Log.With().Str("remote", r.RemoteAddr).Logger()
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		answer(w, http.StatusUnauthorized, Answer{Reason: "a client certificate is required"})
		return
	}
	from, ok := NameOf(r.TLS.PeerCertificates[0], s.Peers)
	if !ok {
		// The handshake already refuses these; kept for a Server used
		// behind another TLS configuration.
		log.Warn().Str("certificate", describeCert(r.TLS.PeerCertificates[0])).Msg("request refused: not a configured peer")
		answer(w, http.StatusForbidden, Answer{Reason: "not a configured peer"})
		return
	}
	if r.URL.RawPath != "" || path.Clean(r.URL.Path) != r.URL.Path {
		// ServeMux would redirect these to the clean path: no request
		// of the channel is written so.
		answer(w, http.StatusNotFound, Answer{Reason: "unknown request " + r.Method + " " + r.URL.Path})
		return
	}
	s.muxOnce.Do(s.route)
	ctx := context.WithValue(r.Context(), askerKey{}, asker{name: from, log: log.With().Str("peer", from).Logger()})
	s.mux.ServeHTTP(w, r.WithContext(ctx))
}

// askerKey carries the authenticated asker from ServeHTTP to the routes.
type askerKey struct{}

type asker struct {
	name string
	log  zerolog.Logger
}

func askerOf(r *http.Request) asker { return r.Context().Value(askerKey{}).(asker) }

// route registers the requests the channel answers. Any other method on a
// known path gets 405, any other path 404, both as JSON Answers.
func (s *Server) route() {
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("POST "+ReservePath, s.decision(s.Helper.Reserve))
	s.mux.HandleFunc("POST "+DowngradePath, s.decision(s.Helper.Downgrade))
	s.mux.HandleFunc("POST "+HoldersPath, s.holders)
	s.mux.HandleFunc("POST "+CapacityPath, s.capacity)
	for _, path := range []string{ReservePath, DowngradePath, HoldersPath, CapacityPath} {
		s.mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			log := askerOf(r).log
			log.Warn().Str("method", r.Method).Str("path", r.URL.Path).Msg("request refused: method not allowed")
			w.Header().Set("Allow", http.MethodPost)
			answer(w, http.StatusMethodNotAllowed, Answer{Reason: r.Method + " " + r.URL.Path + ": only POST is answered"})
		})
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		log := askerOf(r).log
		log.Warn().Str("method", r.Method).Str("path", r.URL.Path).Msg("request refused: unknown request")
		answer(w, http.StatusNotFound, Answer{Reason: "unknown request " + r.Method + " " + r.URL.Path})
	})
}

// answer writes ans as the JSON body of a code answer.
func answer(w http.ResponseWriter, code int, ans Answer) { writeJSON(w, code, ans) }

// writeJSON writes v as the JSON body of a code answer.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// questionContext bounds the work on a read-only question (holders,
// capacity) by the asker's own timeout, at most MaxWait.
func (s *Server) questionContext(r *http.Request, timeoutMS int64) (context.Context, context.CancelFunc) {
	wait := s.maxWait()
	if timeoutMS > 0 {
		wait = min(wait, time.Duration(timeoutMS)*time.Millisecond)
	}
	return context.WithTimeout(r.Context(), wait)
}

// decision answers a reservation or a downgrade request with decide's answer.
func (s *Server) decision(decide func(context.Context, string, Request) Answer) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		from := askerOf(r)
		log := from.log.With().Str("request", r.URL.Path).Logger()
		var req Request
		if code, err := decodeBody(w, r, &req, func() error { return req.Check(r.URL.Path) }); err != nil {
			log.Warn().Err(err).Msg("request refused: malformed")
			answer(w, code, Answer{Reason: "malformed request: " + err.Error()})
			return
		}
		lvs := make([]string, len(req.LVs))
		for i, l := range req.LVs {
			lvs[i] = l.VG + "/" + l.LV
		}
		log.Info().Str("domain", req.Domain).Str("uuid", req.UUID).Strs("lvs", lvs).Int64("timeout_ms", req.TimeoutMS).
			Msg("request received")
		if req.TimeoutMS <= 0 {
			answer(w, http.StatusOK, Answer{Reason: "the request carries no deadline"})
			return
		}
		wait := min(time.Duration(req.TimeoutMS)*time.Millisecond, s.maxWait())
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		defer cancel()
		ans := decide(ctx, from.name, req)
		log.Info().Str("domain", req.Domain).Str("uuid", req.UUID).Bool("granted", ans.Granted).Str("reason", ans.Reason).
			Dur("took", time.Since(start)).Msg("answer sent")
		answer(w, http.StatusOK, ans)
	}
}

// holders answers the read-only holders question of `lvhook check`.
func (s *Server) holders(w http.ResponseWriter, r *http.Request) {
	log := askerOf(r).log
	var req HoldersRequest
	if code, err := decodeBody(w, r, &req, func() error { return req.Check() }); err != nil {
		log.Warn().Err(err).Msg("holders request refused: malformed")
		writeJSON(w, code, HoldersAnswer{Error: "malformed request: " + err.Error()})
		return
	}
	ctx, cancel := s.questionContext(r, req.TimeoutMS)
	defer cancel()
	s.slotsOnce.Do(func() { s.holderSlots = make(chan struct{}, cmp.Or(s.MaxHolderReads, defaultMaxHolderReads)) })
	select {
	case s.holderSlots <- struct{}{}:
		defer func() { <-s.holderSlots }()
	case <-ctx.Done():
		log.Warn().Int("reads", cap(s.holderSlots)).Msg("holders request refused: busy")
		writeJSON(w, http.StatusServiceUnavailable, HoldersAnswer{Error: fmt.Sprintf("busy: %d other holders questions took the whole wait", cap(s.holderSlots))})
		return
	}
	ans := s.Helper.Holds(ctx, req)
	log.Debug().Int("lvs", len(req.LVs)).Int("held", len(ans.Holds)).Str("error", ans.Error).Msg("holders answered")
	writeJSON(w, http.StatusOK, ans)
}

// capacity answers `lvhook evacuate`'s read-only capacity question.
func (s *Server) capacity(w http.ResponseWriter, r *http.Request) {
	log := askerOf(r).log
	var req CapacityRequest
	if code, err := decodeBody(w, r, &req, func() error { return nil }); err != nil {
		log.Warn().Err(err).Msg("capacity request refused: malformed")
		writeJSON(w, code, CapacityAnswer{Error: "malformed request: " + err.Error()})
		return
	}
	ctx, cancel := s.questionContext(r, req.TimeoutMS)
	defer cancel()
	ans := s.Helper.Capacity(ctx)
	log.Info().Bool("libvirt_up", ans.LibvirtUp).Int64("free_memory_bytes", ans.FreeMemoryBytes).Bool("draining", ans.Draining).
		Int("active_domains", ans.ActiveDomains).Str("error", ans.Error).Msg("capacity answered")
	writeJSON(w, http.StatusOK, ans)
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
