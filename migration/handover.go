package migration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/lvhook/lvhook/hook"
	"github.com/lvhook/lvhook/lvmlock"
)

// Transport carries a downgrade request to one peer's lock helper.
type Transport interface {
	Ask(ctx context.Context, peer hook.Peer, req Request) (Answer, error)
}

// Handover is the destination's side of a live migration: from the prepare
// hook it asks the peers' lock helpers to downgrade the domain's LVs on the
// source. Its Downgrade method is hook.Hook's Handover.
type Handover struct {
	// Self is this host's name; the peer of that name is not asked.
	Self    string
	Peers   []hook.Peer
	Timeout time.Duration
	// Transport carries the requests (HTTPSTransport in production).
	Transport Transport
	// HolderHostID, when set, returns the sanlock host_id that holds the
	// LVs (0: unknown); only the peer with that host_id is then asked.
	HolderHostID func(ctx context.Context, refs []lvmlock.Ref) int
	// Sleep pauses between tries to a peer that did not answer; tests
	// replace it.
	Sleep func(ctx context.Context, d time.Duration) error
	Log   zerolog.Logger
}

// NewHandover returns the Handover of the configuration, over HTTPS with the
// configured client certificate.
func NewHandover(cfg hook.Config, log zerolog.Logger) *Handover {
	d := cfg.Daemon
	return &Handover{
		Self:      HostName(cfg),
		Peers:     d.Peers,
		Timeout:   d.PeerTimeout.D(),
		Transport: &HTTPSTransport{Credentials: LazyCredentials(d.CACert, d.ClientCert, d.ClientKey)},
		Log:       log,
	}
}

// HostName is this host's name as its peers know it: daemon.host_name, or
// the system's host name.
func HostName(cfg hook.Config) string {
	if cfg.Daemon.HostName != "" {
		return cfg.Daemon.HostName
	}
	name, err := os.Hostname()
	if err != nil {
		return "localhost"
	}
	return name
}

// Downgrade asks the peers concurrently and returns nil at the first yes.
// A peer that does not answer (down, unreachable, answer lost) is asked again,
// with backoff, within Timeout: the request is idempotent, and the source
// says yes again to the same destination for the same migration job.
// Without a yes the error wraps hook.ErrHandoverRefused and names every
// peer's reason: the prepare is then refused without trying -asy. It returns
// only when every request has ended, so that nothing it started outlives the
// hook's decision.
func (h *Handover) Downgrade(ctx context.Context, d *hook.Domain, refs []lvmlock.Ref) error {
	peers := h.candidates(ctx, refs)
	if len(peers) == 0 {
		return fmt.Errorf("%w: [[daemon.peer]] names no other host", hook.ErrHandoverRefused)
	}
	if h.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.Timeout)
		defer cancel()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req := Request{Domain: d.Name, UUID: d.UUID}
	for _, r := range refs {
		req.LVs = append(req.LVs, LVRef{VG: r.VG, LV: r.LV})
	}
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
			ans, err := h.ask(ctx, p, req)
			results <- result{peer: p.Name, ans: ans, err: err, took: time.Since(start)}
		}()
	}
	granted := ""
	var reasons []string
	for range peers {
		r := <-results
		log := h.Log.With().Str("peer", r.peer).Str("domain", d.Name).Str("uuid", d.UUID).Dur("took", r.took).Logger()
		switch {
		case r.err != nil && granted != "":
			// Cancelled after another peer's yes.
		case r.err != nil:
			log.Warn().Err(r.err).Msg("peer did not answer")
			reasons = append(reasons, fmt.Sprintf("%s: %v", r.peer, r.err))
		case r.ans.Granted:
			log.Info().Msg("peer downgraded the source")
			if granted == "" {
				granted = r.peer
				cancel()
			}
		default:
			log.Info().Str("reason", r.ans.Reason).Msg("peer refused")
			reasons = append(reasons, fmt.Sprintf("%s: %s", r.peer, r.ans.Reason))
		}
	}
	if granted != "" {
		return nil
	}
	slices.Sort(reasons) // by peer, whatever the order of the answers
	return fmt.Errorf("%w (%s)", hook.ErrHandoverRefused, strings.Join(reasons, "; "))
}

// ask sends req to one peer until it answers, ctx ends, or the pauses
// between tries add up to Timeout.
func (h *Handover) ask(ctx context.Context, p hook.Peer, req Request) (Answer, error) {
	sleep := h.Sleep
	if sleep == nil {
		sleep = sleepErr
	}
	delay, slept := 100*time.Millisecond, time.Duration(0)
	for {
		if dl, ok := ctx.Deadline(); ok {
			req.TimeoutMS = max(time.Until(dl).Milliseconds(), 1)
		}
		ans, err := h.Transport.Ask(ctx, p, req)
		if err == nil {
			return ans, nil
		}
		if errors.Is(err, errLocal) || ctx.Err() != nil || slept+delay > h.Timeout {
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

func sleepErr(ctx context.Context, d time.Duration) error {
	if !sleepCtx(ctx, d) {
		return ctx.Err()
	}
	return nil
}

// candidates are the peers to ask: the lease holder's when it is known,
// else every peer but this host.
func (h *Handover) candidates(ctx context.Context, refs []lvmlock.Ref) []hook.Peer {
	var out []hook.Peer
	for _, p := range h.Peers {
		if !strings.EqualFold(p.Name, h.Self) {
			out = append(out, p)
		}
	}
	if h.HolderHostID == nil {
		return out
	}
	if id := h.HolderHostID(ctx, refs); id != 0 {
		for _, p := range out {
			if p.HostID == id {
				return []hook.Peer{p}
			}
		}
	}
	return out
}
