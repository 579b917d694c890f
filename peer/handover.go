package peer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/lvhook/lvhook/config"
	"github.com/lvhook/lvhook/domxml"
	"github.com/lvhook/lvhook/internal/clock"
	"github.com/lvhook/lvhook/lvmlock"
)

// Handover is the destination's side of a live migration, a hook.Handover:
// at migrate begin it finds the source among the peers and reserves the
// handover there; at prepare it asks that source to downgrade the domain's
// LVs to sh.
type Handover struct {
	// Self is this host's name; the peer of that name is not asked.
	Self    string
	Peers   []config.Peer
	Timeout time.Duration
	// Transport carries the requests (HTTPSTransport in production).
	Transport Transport
	// Sleep pauses between tries to a peer that did not answer; tests
	// replace it.
	Sleep func(ctx context.Context, d time.Duration) error
	Log   zerolog.Logger
}

// NewHandover returns the Handover of the configuration, over HTTPS with the
// configured client certificate.
func NewHandover(cfg config.Config, log zerolog.Logger) *Handover {
	d := cfg.Daemon
	return &Handover{
		Self:      cfg.HostName(),
		Peers:     d.Peers,
		Timeout:   d.PeerTimeout.D(),
		Transport: &HTTPSTransport{Credentials: LazyCredentials(d.CACert, d.ClientCert, d.ClientKey)},
		Log:       log,
	}
}

// holderShare is the part of Timeout that Reserve gives the
// holder's try before it asks the others.
const holderShare = 4

// Reserve reserves the handover of d's outgoing migration for
// this host, and returns the peer that said yes: only the host where libvirt
// shows d migrating out can. holder is the sanlock host_id that holds d's
// LV lease (0: unknown), which before the handover is the source's: the
// peer configured with that host_id is asked first, alone, for at most a
// quarter of Timeout. When it does not say yes, or when holder names no
// single other peer (0, negative, no peer, two peers, or this host), every
// other peer is asked at once, within what is left of Timeout. A holder
// that answered no is not asked again (its answer is its lock helper's
// decision for the job now); one that did not answer is, since the
// answer may have been lost and both requests are idempotent. Who is asked
// first changes no answer: a peer that is not the source refuses whoever
// asks. Without a yes the error wraps ErrRefused and names every peer's
// reason.
func (h *Handover) Reserve(ctx context.Context, d *domxml.Domain, holder int) (string, error) {
	var peers []config.Peer
	for _, p := range h.Peers {
		if !strings.EqualFold(p.Name, h.Self) {
			peers = append(peers, p)
		}
	}
	if len(peers) == 0 {
		return "", fmt.Errorf("%w: [[daemon.peer]] names no other host", ErrRefused)
	}
	req := Request{Domain: d.Name, UUID: d.UUID}
	budget := h.Timeout
	ctx, cancel := within(ctx, budget)
	defer cancel()
	log := h.Log.With().Str("request", ReservePath).Str("domain", d.Name).Str("uuid", d.UUID).Int("holder_host_id", holder).Logger()
	var reasons []string
	if i := h.holderPeer(holder); i < 0 {
		log.Debug().Msg("lease holder unknown or not a single other peer: asking every peer")
	} else {
		p := h.Peers[i]
		share := budget / holderShare
		fctx, cancel := within(ctx, share)
		start := time.Now()
		ans, err := h.ask(fctx, p, ReservePath, req, share)
		cancel()
		log := log.With().Str("peer", p.Name).Dur("took", time.Since(start)).Logger()
		switch {
		case err == nil && ans.Granted:
			log.Info().Msg("lease holder said yes")
			return p.Name, nil
		case err == nil:
			log.Info().Str("reason", ans.Reason).Msg("lease holder refused: asking the other peers")
			reasons = append(reasons, fmt.Sprintf("%s: %s", p.Name, ans.Reason))
			peers = slices.DeleteFunc(peers, func(q config.Peer) bool { return q.Name == p.Name })
		default:
			log.Info().Err(err).Msg("lease holder did not answer: asking every peer")
		}
		budget -= share
	}
	if len(peers) == 0 {
		return "", refusedBy(reasons)
	}
	source, more := h.askAll(ctx, peers, ReservePath, req, budget)
	if source != "" {
		return source, nil
	}
	return "", refusedBy(append(reasons, more...))
}

// holderPeer returns the index in Peers of the one peer configured with
// host_id holder, or -1 when there is none, more than one, or it is this
// host.
func (h *Handover) holderPeer(holder int) int {
	found := -1
	for i, p := range h.Peers {
		if holder <= 0 || p.HostID != holder {
			continue
		}
		if found >= 0 || strings.EqualFold(p.Name, h.Self) {
			return -1
		}
		found = i
	}
	return found
}

// Downgrade asks source, the peer that reserved the handover at migrate
// begin, to convert refs to sh. Without its yes the error wraps
// ErrRefused.
func (h *Handover) Downgrade(ctx context.Context, source string, d *domxml.Domain, refs []lvmlock.Ref) error {
	i := slices.IndexFunc(h.Peers, func(p config.Peer) bool { return p.Name == source })
	if i < 0 || strings.EqualFold(source, h.Self) {
		return fmt.Errorf("%w: %q, which reserved the handover, is not a configured peer", ErrRefused, source)
	}
	req := Request{Domain: d.Name, UUID: d.UUID}
	for _, r := range refs {
		req.LVs = append(req.LVs, LVRef{VG: r.VG, LV: r.LV})
	}
	_, err := h.askFirst(ctx, h.Peers[i:i+1], DowngradePath, req)
	return err
}

// askFirst sends req to the peers concurrently, within Timeout, and
// returns the first that says yes; without a yes the error wraps
// ErrRefused and names every peer's reason.
func (h *Handover) askFirst(ctx context.Context, peers []config.Peer, path string, req Request) (string, error) {
	ctx, cancel := within(ctx, h.Timeout)
	defer cancel()
	granted, reasons := h.askAll(ctx, peers, path, req, h.Timeout)
	if granted != "" {
		return granted, nil
	}
	return "", refusedBy(reasons)
}

// within bounds ctx by d; d <= 0 bounds nothing (a Handover without
// Timeout).
func within(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// refusedBy is the refusal of the peers' reasons.
func refusedBy(reasons []string) error {
	slices.Sort(reasons) // by peer, whatever the order of the answers
	return fmt.Errorf("%w (%s)", ErrRefused, strings.Join(reasons, "; "))
}

// askAll sends req to the peers concurrently and returns the first that
// says yes, or else every peer's reason. A peer that does not answer
// (down, unreachable, answer lost) is asked again, with backoff, within
// ctx and pauses adding up to budget: both requests are idempotent for
// the same asking host and migration job. It returns only when every
// request has ended, so that nothing it started outlives the hook's
// decision.
func (h *Handover) askAll(ctx context.Context, peers []config.Peer, path string, req Request, budget time.Duration) (string, []string) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		peer string
		ans  Answer
		err  error
		took time.Duration
	}
	results := make(chan result, len(peers))
	for _, p := range peers {
		go func() {
			start := time.Now()
			ans, err := h.ask(ctx, p, path, req, budget)
			results <- result{peer: p.Name, ans: ans, err: err, took: time.Since(start)}
		}()
	}
	granted := ""
	var reasons []string
	for range peers {
		r := <-results
		log := h.Log.With().Str("peer", r.peer).Str("request", path).Str("domain", req.Domain).Str("uuid", req.UUID).Dur("took", r.took).Logger()
		switch {
		case r.err != nil && granted != "":
			// Cancelled after another peer's yes.
		case r.err != nil:
			log.Warn().Err(r.err).Msg("peer did not answer")
			reasons = append(reasons, fmt.Sprintf("%s: %v", r.peer, r.err))
		case r.ans.Granted:
			log.Info().Msg("peer said yes")
			if granted == "" {
				granted = r.peer
				cancel()
			}
		default:
			log.Info().Str("reason", r.ans.Reason).Msg("peer refused")
			reasons = append(reasons, fmt.Sprintf("%s: %s", r.peer, r.ans.Reason))
		}
	}
	return granted, reasons
}

// ask sends req to one peer until it answers, ctx ends, or the pauses
// between tries add up to budget.
func (h *Handover) ask(ctx context.Context, p config.Peer, path string, req Request, budget time.Duration) (Answer, error) {
	sleep := h.Sleep
	if sleep == nil {
		sleep = clock.Sleep
	}
	delay, slept := 100*time.Millisecond, time.Duration(0)
	for {
		if dl, ok := ctx.Deadline(); ok {
			req.TimeoutMS = max(time.Until(dl).Milliseconds(), 1)
		}
		ans, err := h.Transport.Ask(ctx, p, path, req)
		if err == nil {
			return ans, nil
		}
		if errors.Is(err, errLocal) || ctx.Err() != nil || slept+delay > budget {
			return Answer{}, err
		}
		h.Log.Debug().Err(err).Str("peer", p.Name).Dur("delay", delay).Msg("asking again")
		if sleep(ctx, delay) != nil {
			return Answer{}, err
		}
		slept += delay
		delay = min(2*delay, 2*time.Second)
	}
}
