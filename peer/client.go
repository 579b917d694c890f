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

// AskHolders asks one peer which of the LVs it holds.
func (t *HTTPSTransport) AskHolders(ctx context.Context, peer config.Peer, req HoldersRequest) (HoldersAnswer, error) {
	cr, err := t.Credentials()
	if err != nil {
		return HoldersAnswer{}, err
	}
	body, err := json.Marshal(req)
	if err != nil {
		return HoldersAnswer{}, err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+peerAddr(peer.Address)+HoldersPath, bytes.NewReader(body))
	if err != nil {
		return HoldersAnswer{}, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := peerClient(cr, peer).Do(hreq)
	if err != nil {
		return HoldersAnswer{}, err
	}
	defer resp.Body.Close()
	var ans HoldersAnswer
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxBody)).Decode(&ans); err != nil || resp.StatusCode != http.StatusOK {
		if ans.Error != "" {
			return HoldersAnswer{}, fmt.Errorf("answered HTTP %d: %s", resp.StatusCode, ans.Error)
		}
		return HoldersAnswer{}, fmt.Errorf("answered HTTP %d without holders", resp.StatusCode)
	}
	if ans.Error != "" {
		return HoldersAnswer{}, errors.New(ans.Error)
	}
	return ans, nil
}
