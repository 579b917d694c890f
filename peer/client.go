package peer

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"

	"github.com/lvhook/lvhook/config"
)

// Transport carries a request (a reservation or a downgrade, by its path)
// to one peer's lock helper.
type Transport interface {
	Ask(ctx context.Context, peer config.Peer, path string, req Request) (Answer, error)
}

// HoldersTransport carries holder questions to one peer.
type HoldersTransport interface {
	AskHolders(ctx context.Context, peer config.Peer, req HoldersRequest) (HoldersAnswer, error)
}

// CapacityTransport carries capacity questions to one peer.
type CapacityTransport interface {
	AskCapacity(ctx context.Context, peer config.Peer, req CapacityRequest) (CapacityAnswer, error)
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
	ans, status, err := post[Answer](ctx, t, peer, path, req)
	if err != nil {
		return Answer{}, err
	}
	if status != http.StatusOK && ans.Reason == "" {
		return Answer{}, fmt.Errorf("answered HTTP %d", status)
	}
	return ans, nil
}

// post sends req to path on peer and decodes the answer, whatever its
// status. Its error wraps errLocal when this host's TLS files cannot be
// used: asking again cannot help.
func post[T any](ctx context.Context, t *HTTPSTransport, peer config.Peer, path string, req any) (ans T, status int, err error) {
	cr, err := t.Credentials()
	if err != nil {
		return ans, 0, fmt.Errorf("%w: %w", errLocal, err)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return ans, 0, err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+peerAddr(peer.Address)+path, bytes.NewReader(body))
	if err != nil {
		return ans, 0, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := peerClient(cr, peer).Do(hreq)
	if err != nil {
		return ans, 0, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxBody)).Decode(&ans); err != nil {
		return ans, resp.StatusCode, fmt.Errorf("answered HTTP %d without a decision: %w", resp.StatusCode, err)
	}
	return ans, resp.StatusCode, nil
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

// AskHolders asks one peer which of the LVs it holds.
func (t *HTTPSTransport) AskHolders(ctx context.Context, peer config.Peer, req HoldersRequest) (HoldersAnswer, error) {
	ans, status, err := post[HoldersAnswer](ctx, t, peer, HoldersPath, req)
	switch {
	case ans.Error != "" && (err != nil || status != http.StatusOK):
		return HoldersAnswer{}, fmt.Errorf("answered HTTP %d: %s", status, ans.Error)
	case status != 0 && (err != nil || status != http.StatusOK):
		return HoldersAnswer{}, fmt.Errorf("answered HTTP %d without holders", status)
	case err != nil:
		return HoldersAnswer{}, err
	case ans.Error != "":
		return HoldersAnswer{}, errors.New(ans.Error)
	}
	return ans, nil
}

// AskCapacity asks one peer for its capacity. An answer that is not JSON,
// not 200, or whose numbers no host can have is an error: that peer is not
// believed (CapacityAnswer.Check).
func (t *HTTPSTransport) AskCapacity(ctx context.Context, peer config.Peer, req CapacityRequest) (CapacityAnswer, error) {
	ans, status, err := post[CapacityAnswer](ctx, t, peer, CapacityPath, req)
	switch {
	case status != 0 && err != nil:
		return CapacityAnswer{}, fmt.Errorf("answered HTTP %d without a capacity: %w", status, errors.Unwrap(err))
	case err != nil:
		return CapacityAnswer{}, err
	case status != http.StatusOK && ans.Error != "":
		return CapacityAnswer{}, fmt.Errorf("answered HTTP %d: %s", status, ans.Error)
	case status != http.StatusOK:
		return CapacityAnswer{}, fmt.Errorf("answered HTTP %d without a capacity", status)
	}
	if err := ans.Check(); err != nil {
		return CapacityAnswer{}, fmt.Errorf("answered a capacity no host has: %w", err)
	}
	return ans, nil
}
