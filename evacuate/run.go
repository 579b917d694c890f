package evacuate

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/lvhook/lvhook/config"
	"github.com/lvhook/lvhook/internal/clock"
	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/peer"
	"github.com/lvhook/lvhook/state"
	"github.com/lvhook/lvhook/virt"
)

// Evacuator evacuates this host.
type Evacuator struct {
	Config config.Config
	// Host is this host's name; the peer of that name is skipped.
	Host    string
	Libvirt Libvirt
	// LVM reads the LVs' types and lock modes; it changes no lock (the
	// hooks and the lock helper do, as libvirt migrates and stops).
	LVM   *lvmlock.Client
	State *state.State
	Peers peer.CapacityTransport
	Log   zerolog.Logger
	// Progress gets one line as each domain's evacuation begins and ends.
	Progress io.Writer
	// Now and Sleep are the clock (tests replace them); Poll is the pause
	// between looks at a domain that should stop or lock ex (default 2 s),
	// AbortBound is how long an aborted migration may still take
	// (virt.JobAbortBound); tests shorten it.
	AbortBound time.Duration
	// Reserve the time kept for a destroy (config.EvacuateReserve).
	Now     func() time.Time
	Sleep   func(ctx context.Context, d time.Duration) error
	Poll    time.Duration
	Reserve time.Duration

	mu sync.Mutex // Progress
}

// Options are one run's command line.
type Options struct {
	// To, when set, names the one peer domains may go to.
	To string
	// Parallel is how many domains migrate or stop at once (0: the
	// configured evacuate.parallel).
	Parallel int
	// DryRun prints the plan and changes nothing.
	DryRun bool
	// AtShutdown: the host is shutting down; the evacuating marker stays.
	AtShutdown bool
}

func (e *Evacuator) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

func (e *Evacuator) sleep(ctx context.Context, d time.Duration) error {
	if e.Sleep != nil {
		return e.Sleep(ctx, d)
	}
	return clock.Sleep(ctx, d)
}

// Run evacuates the host, within evacuate.timeout: it marks the host as
// evacuating (its lock helper tells the peers it is draining), asks the
// peers' capacity, reads the domains, plans, then migrates in the plan's
// order, parallel at most, and, once every migration has ended, gives the
// domains that did not move their fallbacks, lowest priority first. The
// migrations must end by timeout - (shutdown_timeout + Reserve): what is
// left is for the fallbacks. An error means nothing was done.
func (e *Evacuator) Run(ctx context.Context, opts Options) (*Report, error) {
	cfg := e.Config.Evacuate
	start := e.now()
	if opts.To != "" && !e.isPeer(opts.To) {
		return nil, fmt.Errorf("--to %s: no [[daemon.peer]] other than this host is named so", opts.To)
	}
	parallel := cmp.Or(opts.Parallel, cfg.Parallel, 1)
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout.D())
	defer cancel()
	if !opts.DryRun {
		// Before the peers are asked: two hosts that evacuate at once
		// then see each other draining.
		if err := e.State.MarkEvacuating(state.Evacuation{PID: os.Getpid(), AtShutdown: opts.AtShutdown}); err != nil {
			e.say(nil, "cannot mark this host as evacuating (%v): peers that evacuate too may send it domains", err)
		}
		if !opts.AtShutdown {
			defer func() {
				if err := e.State.ClearEvacuating(); err != nil {
					e.say(nil, "cannot clear the evacuating mark (%v): peers take this host as draining until it is gone", err)
				}
			}()
		}
	}
	peers := e.probePeers(ctx)
	doms, err := e.readDomains(ctx)
	if err != nil {
		return nil, err
	}
	steps := Plan(doms, peers, PlanOptions{To: opts.To, Margin: uint64(cfg.MemoryMarginMiB) << 20})
	rep := newReport(e.Host, start, opts.DryRun, peers, steps)
	if opts.DryRun {
		for i, st := range steps {
			e.say(&rep.Domains[i], "%s", plannedLine(st))
		}
		rep.finish(e.now())
		return rep, nil
	}
	run := &runState{e: e, steps: steps, rep: rep, peers: peers, parallel: parallel}
	deadline, _ := ctx.Deadline()
	// A migration past its deadline is aborted, which may take up to
	// virt.JobAbortBound more: kept out of the fallbacks' time as well.
	mctx, mcancel := context.WithDeadline(ctx, deadline.Add(-(cfg.ShutdownTimeout.D() + e.reserve() + e.abortBound())))
	run.migrateAll(mctx)
	mcancel()
	run.fallbackAll(ctx)
	rep.finish(e.now())
	return rep, nil
}

func (e *Evacuator) isPeer(name string) bool {
	for _, p := range e.Config.Daemon.Peers {
		if strings.EqualFold(p.Name, name) && !strings.EqualFold(p.Name, e.Host) {
			return true
		}
	}
	return false
}

func (e *Evacuator) reserve() time.Duration { return cmp.Or(e.Reserve, config.EvacuateReserve) }

func (e *Evacuator) abortBound() time.Duration { return cmp.Or(e.AbortBound, virt.JobAbortBound) }

func (e *Evacuator) poll() time.Duration { return cmp.Or(e.Poll, 2*time.Second) }

// runState is one evacuation under way.
type runState struct {
	e        *Evacuator
	steps    []Step
	rep      *Report
	peers    []Peer
	parallel int

	mu       sync.Mutex
	fallback []int // steps that get their fallback, by index
}

// migrateAll migrates the steps that plan a migration, in order, parallel
// at most at once; every other step, and every migration that fails, joins
// the fallbacks.
func (r *runState) migrateAll(ctx context.Context) {
	var migrations []int
	for i, st := range r.steps {
		switch st.Action {
		case ActionMigrate:
			migrations = append(migrations, i)
		case ActionSkip:
			r.rep.Domains[i].Result = ResultSkipped
			r.e.say(&r.rep.Domains[i], "%s: skipped: %s", st.Name, st.Reason)
		default:
			r.fallback = append(r.fallback, i)
		}
	}
	next := make(chan int)
	var wg sync.WaitGroup
	for range r.parallel {
		wg.Go(func() {
			for i := range next {
				if !r.migrate(ctx, i) {
					r.mu.Lock()
					r.fallback = append(r.fallback, i)
					r.mu.Unlock()
				}
			}
		})
	}
	for _, i := range migrations {
		next <- i
	}
	close(next)
	wg.Wait()
}

// migrate migrates step i; false: it is still here and gets its fallback.
func (r *runState) migrate(ctx context.Context, i int) bool {
	e, st, d := r.e, r.steps[i], &r.rep.Domains[i]
	if ctx.Err() != nil {
		d.Reason = "no time was left for migrations (evacuate.timeout less shutdown_timeout, the destroy's 30 s and 75 s to abort a migration)"
		e.say(d, "%s -> %s: not migrated: no time left for migrations", st.Name, st.Target)
		return false
	}
	var p Peer
	for _, q := range r.peers {
		if q.Name == st.Target {
			p = q
		}
	}
	started := e.now()
	d.Actions = append(d.Actions, ActionMigrate)
	e.say(d, "%s -> %s: migrating (priority %d, %s)", st.Name, st.Target, st.Priority, Size(st.Memory))
	err := e.Libvirt.Migrate(ctx, st.UUID, virt.Migration{DestURI: p.URI, MigrateURI: p.MigrateURI, Timeout: e.Config.Evacuate.MigrationTimeout.D()})
	d.took += e.now().Sub(started)
	if err == nil {
		d.Result = ResultMigrated
		e.say(d, "%s -> %s: migrated in %s", st.Name, st.Target, took(d.took))
		return true
	}
	if errors.Is(err, virt.ErrJobAborted) && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("%w; the evacuation's time for migrations ran out", err)
	}
	msg := lvmlock.OneLine(err.Error())
	d.addError(msg)
	d.Reason = "its migration failed"
	e.say(d, "%s -> %s: migration failed after %s: %s", st.Name, st.Target, took(d.took), msg)
	if state, err := e.Libvirt.DomainState(context.WithoutCancel(ctx), st.UUID); errors.Is(err, virt.ErrNoDomain) || err == nil && state == virt.StateShutoff {
		d.Result = ResultGone
		e.say(d, "%s: no longer runs here", st.Name)
		return true
	}
	return false
}

// say writes one progress line and logs it with the domain's fields.
func (e *Evacuator) say(d *DomainReport, format string, a ...any) {
	line := fmt.Sprintf(format, a...)
	ev := e.Log.Info()
	if d != nil {
		ev = ev.Str("domain", d.Name).Str("uuid", d.UUID)
		if d.Target != "" {
			ev = ev.Str("peer", d.Target)
		}
	}
	ev.Msg(line)
	e.write(line)
}

// sayPeer is say for a peer's line.
func (e *Evacuator) sayPeer(p Peer, format string, a ...any) {
	line := fmt.Sprintf(format, a...)
	e.Log.Info().Str("peer", p.Name).Msg(line)
	e.write(line)
}

func (e *Evacuator) write(line string) {
	if e.Progress == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	fmt.Fprintln(e.Progress, line)
}

// took renders a duration as the progress lines do: "31.2 s", "2m0.4s".
func took(d time.Duration) string {
	if d < time.Minute {
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
	return d.Round(100 * time.Millisecond).String()
}
