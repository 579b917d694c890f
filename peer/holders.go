package peer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/lvhook/lvhook/config"
	"github.com/lvhook/lvhook/lvmlock"
)

// Holder is a peer holding an LV lock, as it answered.
type Holder struct {
	Host string
	Mode lvmlock.Mode
}

// Holders asks every peer which LVs it holds, for `lvhook check`.
type Holders struct {
	Self      string
	Peers     []config.Peer
	Timeout   time.Duration
	Transport HoldersTransport
}

// NewHolders returns the Holders client of the configuration, or nil when
// it names no other host.
func NewHolders(cfg config.Config) *Holders {
	p := &Holders{Self: cfg.HostName(), Timeout: cfg.Daemon.PeerTimeout.D(),
		Transport: &HTTPSTransport{Credentials: LazyCredentials(cfg.Daemon.CACert, cfg.Daemon.ClientCert, cfg.Daemon.ClientKey)}}
	for _, peer := range cfg.Daemon.Peers {
		if !strings.EqualFold(peer.Name, p.Self) {
			p.Peers = append(p.Peers, peer)
		}
	}
	if len(p.Peers) == 0 {
		return nil
	}
	return p
}

// Holders implements HolderSource. Every peer must answer: an answer
// missing would turn "unknown" into "nobody else".
func (p *Holders) Holders(ctx context.Context, refs []lvmlock.Ref) (map[lvmlock.Ref][]Holder, error) {
	if p.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.Timeout)
		defer cancel()
	}
	req := HoldersRequest{}
	for _, r := range refs {
		req.LVs = append(req.LVs, LVRef{VG: r.VG, LV: r.LV})
	}
	if dl, ok := ctx.Deadline(); ok {
		req.TimeoutMS = max(time.Until(dl).Milliseconds(), 1)
	}
	type result struct {
		peer string
		ans  HoldersAnswer
		err  error
	}
	results := make(chan result, len(p.Peers))
	for _, peer := range p.Peers {
		go func() {
			ans, err := p.Transport.AskHolders(ctx, peer, req)
			results <- result{peer: peer.Name, ans: ans, err: err}
		}()
	}
	out := map[lvmlock.Ref][]Holder{}
	var errs []error
	for range p.Peers {
		r := <-results
		if r.err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.peer, r.err))
			continue
		}
		for _, hold := range r.ans.Holds {
			ref := lvmlock.Ref{VG: hold.VG, LV: hold.LV}
			if slices.Contains(refs, ref) {
				out[ref] = append(out[ref], Holder{Host: r.peer, Mode: hold.Mode})
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	for ref := range out {
		slices.SortFunc(out[ref], func(a, b Holder) int { return strings.Compare(a.Host, b.Host) })
	}
	return out, nil
}
