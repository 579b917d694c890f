package migration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/lvhook/lvhook/config"
	"github.com/lvhook/lvhook/hook"
	"github.com/lvhook/lvhook/lvmlock"
)

// HoldersPath is the peer channel's read-only question "which of these LVs
// do you hold, in which mode?", which `lvhook check` asks every peer: lvm
// shows only this host's locks.
const HoldersPath = "/v1/holders"

// HoldersRequest asks a peer which of LVs it holds.
type HoldersRequest struct {
	LVs       []LVRef `json:"lvs"`
	TimeoutMS int64   `json:"timeout_ms"`
}

// HoldersAnswer is what a peer holds of the LVs asked.
type HoldersAnswer struct {
	Host  string `json:"host"`
	Holds []Hold `json:"holds"`
	// Error is set when the peer could not read its locks.
	Error string `json:"error,omitempty"`
}

// Hold is one LV a peer holds.
type Hold struct {
	VG   string       `json:"vg"`
	LV   string       `json:"lv"`
	Mode lvmlock.Mode `json:"mode"`
}

// Holds answers a HoldersRequest from this host's lvm and lvmlockd state. It
// only reads, so it takes no host lock.
func (h *Helper) Holds(ctx context.Context, req HoldersRequest) HoldersAnswer {
	ans := HoldersAnswer{Host: h.Host, Holds: []Hold{}}
	if err := req.check(); err != nil {
		ans.Error = "malformed request: " + err.Error()
		return ans
	}
	var refs []lvmlock.Ref
	for _, l := range req.LVs {
		refs = append(refs, lvmlock.Ref{VG: l.VG, LV: l.LV})
	}
	if len(refs) == 0 {
		return ans
	}
	st, err := h.LVM.State(ctx, true, lvmlock.VGsOf(refs)...)
	if err != nil {
		ans.Error = fmt.Sprintf("cannot read the lock state on %s: %v", h.Host, err)
		return ans
	}
	for _, r := range refs {
		if m := st.Mode(r); m != lvmlock.ModeNone {
			ans.Holds = append(ans.Holds, Hold{VG: r.VG, LV: r.LV, Mode: m})
		}
	}
	return ans
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

// HoldersTransport carries holder questions to one peer.
type HoldersTransport interface {
	AskHolders(ctx context.Context, peer config.Peer, req HoldersRequest) (HoldersAnswer, error)
}

// PeerHolders asks every peer which LVs it holds: hook.HolderSource for
// `lvhook check`.
type PeerHolders struct {
	Self      string
	Peers     []config.Peer
	Timeout   time.Duration
	Transport HoldersTransport
}

// NewPeerHolders returns the HolderSource of the configuration, or nil when
// it names no other host.
func NewPeerHolders(cfg config.Config) hook.HolderSource {
	p := &PeerHolders{Self: cfg.HostName(), Timeout: cfg.Daemon.PeerTimeout.D(),
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

// Holders implements hook.HolderSource. Every peer must answer: an answer
// missing would turn "unknown" into "nobody else".
func (p *PeerHolders) Holders(ctx context.Context, refs []lvmlock.Ref) (map[lvmlock.Ref][]hook.Holder, error) {
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
	out := map[lvmlock.Ref][]hook.Holder{}
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
				out[ref] = append(out[ref], hook.Holder{Host: r.peer, Mode: hold.Mode})
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	for ref := range out {
		slices.SortFunc(out[ref], func(a, b hook.Holder) int { return strings.Compare(a.Host, b.Host) })
	}
	return out, nil
}
