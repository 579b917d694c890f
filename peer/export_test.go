package peer

import (
	"crypto/tls"
	"net/http"
)

// What the external tests (package peer_test) use of the internals.
var ClientTLS = clientTLS

func (s *Server) HTTPServer(cfg *tls.Config) *http.Server { return s.httpServer(cfg) }
