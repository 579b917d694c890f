package migration

// The model's evacuation burst: a host runs the REAL `lvhook evacuate`
// (evacuate.Evacuator.Run) against its fake libvirtd, whose migrations,
// shutdowns, destroys and managed saves are the model's own activities,
// driven step by step with every other enabled step (cancellations,
// destination QEMUs dying, other hosts' work, the lock helpers) between
// them; the peers' capacity answers are their REAL lock helpers'. The
// invariant is checked after every step, as always; after the run, every
// domain the evacuation left running holds its LVs ex, and once
// exclusive_timeout has passed, none of its domains still running on that
// host holds one sh.

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lvhook/lvhook/config"
	"github.com/lvhook/lvhook/evacuate"
	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/peer"
	"github.com/lvhook/lvhook/virt"
)

// evacStats counts what the model's evacuations did.
type evacStats struct {
	evacuations, evacMigrated, evacFallbacks, evacLeft, evacShut int
}

func (a *evacStats) add(b evacStats) {
	a.evacuations += b.evacuations
	a.evacMigrated += b.evacMigrated
	a.evacFallbacks += b.evacFallbacks
	a.evacLeft += b.evacLeft
	a.evacShut += b.evacShut
}

// evacuationMetadata gives each domain a priority and a fallback drawn from
// the seed (apart from the model's own draws, which it leaves as they were),
// sometimes one evacuate cannot read: the hook must ignore them all.
func evacuationMetadata(seed int64, doms []*simDom) {
	r := rand.New(rand.NewSource(seed ^ 0x5eedeac))
	priorities := []string{"-10", "0", "0", "5", "20", "high"}
	fallbacks := []string{"", "managedsave", "shutdown", "leave", "leave"}
	for _, d := range doms {
		attrs := fmt.Sprintf(`priority="%s"`, priorities[r.Intn(len(priorities))])
		if f := fallbacks[r.Intn(len(fallbacks))]; f != "" {
			attrs += fmt.Sprintf(` fallback="%s"`, f)
		}
		d.xml = []byte(strings.Replace(string(d.xml), "<devices>",
			`<metadata><lvhook:domain xmlns:lvhook="https://lvhook.dev/xmlns/domain/1" `+attrs+`/></metadata><devices>`, 1))
	}
}

// evacuationOption is the burst, at most once a run, on a host whose
// libvirtd is up, that runs a domain and that no activity involves (as an
// operator starts it); never nested (a whole evacuation is no single call).
func (s *sim) evacuationOption(h *simHost) (option, bool) {
	if s.stats.evacuations > 0 || !h.libvirtUp || s.depth > 0 || s.involved(h) ||
		!slices.ContainsFunc(s.doms, func(d *simDom) bool { return s.runningOn(d) == h }) {
		return option{}, false
	}
	return option{name: h.name + ": lvhook evacuate", weight: 6, host: h.id, fault: true, run: func() { s.evacuate(h) }}, true
}

// evacuate runs the evacuation on h and checks what it promises.
func (s *sim) evacuate(h *simHost) {
	s.stats.evacuations++
	cfg := s.configOf(h)
	atShutdown := s.rng.Intn(2) == 0
	ev := &evacuate.Evacuator{
		Config:  cfg,
		Host:    h.name,
		Libvirt: &simEvac{s: s, h: h},
		LVM:     &lvmlock.Client{Runner: &checkRunner{s: s, h: h}, Log: s.log},
		State:   h.state,
		Peers:   simCapacity{s: s},
		// Its decision to leave a domain running is checked as it is
		// made, against the cluster's locks at that moment.
		Progress: leaveCheck{s: s, h: h},
		Log:      s.log.With().Str("host", h.name).Str("role", "evacuate").Logger(),
		Now:      s.now,
		// The waits (for ex, for a shutdown) let the cluster live:
		// time passes and a step or two runs.
		Sleep: func(ctx context.Context, d time.Duration) error {
			s.advance(d)
			for range s.rng.Intn(3) {
				s.do(s.pick(s.options(false)))
			}
			return ctx.Err()
		},
	}
	begun := map[*simDom]int{}
	for _, d := range s.doms {
		begun[d] = d.begun
	}
	rep, err := ev.Run(context.Background(), evacuate.Options{Parallel: 1, AtShutdown: atShutdown})
	if err != nil {
		s.violate("%s: lvhook evacuate did nothing: %v", h.name, err)
		return
	}
	for _, d := range rep.Domains {
		s.tracef("%s: evacuate %s: plan %s %s, did %v, %s %s %s", h.name, d.Name, d.Plan, d.Target, d.Actions, d.Result, d.Reason, d.Error)
		switch d.Result {
		case evacuate.ResultMigrated:
			s.stats.evacMigrated++
		case evacuate.ResultLeft:
			s.stats.evacLeft++
			s.stats.evacFallbacks++
			// Unless someone else acted on it during the evacuation (an
			// operator's virsh destroy or migrate may come in the middle:
			// a migration started after the decision holds sh, and the
			// check below, once exclusive_timeout has passed, covers it).
			if dom := s.domNamed(d.Name); s.runningOn(dom) == h && !s.involvedWith(h, dom) && dom.begun == begun[dom] {
				if why := s.sharedOn(h, d.Name); why != "" {
					s.violate("%s: evacuate left %s running with %s", h.name, d.Name, why)
				}
			}
		case evacuate.ResultShutDown, evacuate.ResultDestroyed, evacuate.ResultSaved:
			s.stats.evacShut++
			s.stats.evacFallbacks++
		}
	}
	if on, err := h.state.Evacuating(); on != atShutdown || err != nil {
		s.violate("%s: after the evacuation, marked evacuating %v (%v), want %v", h.name, on, err, atShutdown)
	}
	// Once exclusive_timeout has passed (the lock helpers at work), no
	// domain of the evacuation still running idle on h holds an LV sh.
	for end := s.now().Add(cfg.Daemon.ExclusiveTimeout.D()); s.now().Before(end); {
		s.advance(3 * time.Second)
		s.drainEvents()
		if h.helper != nil && h.libvirtUp {
			s.do(option{name: h.name + ": helper tick", run: func() { h.helper.Tick(s.daemonCtx(h)) }})
		}
	}
	for _, d := range rep.Domains {
		if dom := s.domNamed(d.Name); dom != nil && !s.involvedWith(h, dom) && s.runningOn(dom) == h {
			if why := s.sharedOn(h, d.Name); why != "" {
				s.violate("%s: %s of the evacuation runs there with %s after exclusive_timeout", h.name, d.Name, why)
			}
		}
	}
}

// sharedOn says which LV the domain needs ex is not ex on h, or "".
// leaveCheck reads lvhook evacuate's progress lines; at "left running here"
// the domain must hold every LV it needs ex, ex on that host, at that moment.
type leaveCheck struct {
	s *sim
	h *simHost
}

func (c leaveCheck) Write(p []byte) (int, error) {
	if name, ok := strings.CutSuffix(strings.TrimSpace(string(p)), ": left running here (it holds every LV ex)"); ok {
		if why := c.s.sharedOn(c.h, name); why != "" {
			c.s.violate("%s: evacuate decided to leave %s running while it holds %s", c.h.name, name, why)
		}
	}
	return len(p), nil
}

func (s *sim) sharedOn(h *simHost, name string) string {
	d := s.domNamed(name)
	if d == nil {
		return ""
	}
	for _, disk := range d.disks {
		if m := s.cluster.Mode(h.id, disk.VG, disk.LV); disk.Mode == lvmlock.ModeEx && m != lvmlock.ModeEx {
			return fmt.Sprintf("%s %s", disk.Ref, m)
		}
	}
	return ""
}

func (s *sim) domNamed(name string) *simDom {
	for _, d := range s.doms {
		if d.name == name {
			return d
		}
	}
	return nil
}

// simCapacity carries the evacuation's capacity questions to the peers'
// lock helpers.
type simCapacity struct{ s *sim }

func (c simCapacity) AskCapacity(ctx context.Context, p config.Peer, _ peer.CapacityRequest) (peer.CapacityAnswer, error) {
	to := c.s.host(p.Name)
	if to == nil || to.helper == nil {
		return peer.CapacityAnswer{}, errors.New("connection refused")
	}
	return to.helper.Capacity(ctx), nil
}

// simEvac is h's libvirtd as the evacuation sees it: its domains, and its
// migrations and stops, which are the model's activities run to their end.
type simEvac struct {
	s *sim
	h *simHost
}

func (e *simEvac) conn() *simConn { return &simConn{s: e.s, h: e.h, gen: e.h.connGen} }

func (e *simEvac) Domains(ctx context.Context) ([]virt.Listed, error) {
	var out []virt.Listed
	for _, d := range e.s.doms {
		st, err := e.conn().DomainState(ctx, d.uuid)
		if err != nil {
			return nil, err
		}
		out = append(out, virt.Listed{Domain: virt.Domain{Name: d.name, UUID: d.uuid}, State: st})
	}
	return out, nil
}

func (e *simEvac) DomainXML(ctx context.Context, uuid string) ([]byte, error) {
	return e.conn().DomainXML(ctx, uuid)
}

func (e *simEvac) DomainJob(ctx context.Context, uuid string) (virt.Job, error) {
	return e.conn().DomainJob(ctx, uuid)
}

func (e *simEvac) DomainState(ctx context.Context, uuid string) (virt.DomainState, error) {
	return e.conn().DomainState(ctx, uuid)
}

func (e *simEvac) DomainMemory(context.Context, string) (uint64, error) { return 1 << 30, nil }

// idle returns the domain when it runs idle here and no other activity
// holds it (libvirt would refuse a second job).
func (e *simEvac) idle(uuid string) (*simDom, error) {
	s := e.s
	for _, d := range s.doms {
		if d.uuid != uuid {
			continue
		}
		v := s.vmOf(e.h, d)
		switch {
		case v == nil || !v.qemu:
			return nil, fmt.Errorf("%w: %s", virt.ErrNoDomain, d.name)
		case v.paused || v.incoming || v.job != virt.JobNone || s.involvedWith(e.h, d):
			return nil, fmt.Errorf("%s: another job is under way", d.name)
		}
		return d, nil
	}
	return nil, virt.ErrNoDomain
}

// drive runs the model until a is done, picking among every enabled step:
// a's own, cancellations among them, and everyone else's.
func (e *simEvac) drive(a activity) error {
	s := e.s
	s.evacBegins = true
	s.begin(a)
	s.evacBegins = false
	for i := 0; !a.done(); i++ {
		opts := s.options(false)
		if i > 3000 || len(opts) == 0 || s.failed() {
			return errors.New("the model's activity did not end")
		}
		s.do(s.pick(opts))
	}
	return nil
}

func (e *simEvac) Migrate(_ context.Context, uuid string, m virt.Migration) error {
	d, err := e.idle(uuid)
	if err != nil {
		return err
	}
	u, err := url.Parse(m.DestURI)
	if err != nil {
		return err
	}
	dst := e.s.host(u.Host)
	switch {
	case dst == nil || dst == e.h || !dst.libvirtUp:
		return fmt.Errorf("cannot connect to %s", m.DestURI)
	case e.s.vmOf(dst, d) != nil || e.s.involvedWith(dst, d):
		// A start of the domain there is under way: libvirt there
		// refuses a second one.
		return fmt.Errorf("%s is active on %s", d.name, dst.name)
	}
	a := &migAct{d: d, s: e.h, t: dst}
	if err := e.drive(a); err != nil {
		return err
	}
	if a.failed || e.s.vmOf(e.h, d) != nil {
		return errors.New("operation failed: migration out job: unexpectedly failed")
	}
	return nil
}

// stop runs a stop of the domain (destroy, the end of a shutdown or of a
// managed save: QEMU killed, stopped end, release end).
func (e *simEvac) stop(uuid string) error {
	d, err := e.idle(uuid)
	if err != nil {
		return err
	}
	return e.drive(&stopAct{d: d, h: e.h})
}

func (e *simEvac) ManagedSave(_ context.Context, uuid string, _ time.Duration) error {
	return e.stop(uuid)
}

// Shutdown: one guest in four ignores it (no ACPI); evacuate then destroys
// it after shutdown_timeout.
func (e *simEvac) Shutdown(_ context.Context, uuid string) error {
	if _, err := e.idle(uuid); err != nil || e.s.rng.Intn(4) == 0 {
		return err
	}
	return e.stop(uuid)
}

func (e *simEvac) Destroy(_ context.Context, uuid string) error { return e.stop(uuid) }

var _ evacuate.Libvirt = (*simEvac)(nil)

// TestModelEvacuation: three domains on host1, evacuated without faults:
// the real evacuation spreads them over host2 and host3 (two and one), each
// through the handover, and the cluster settles with each LV ex on its new
// host alone. With the peers' lock helpers down, nothing can move: each
// domain gets its fallback, and none is left holding an LV sh.
func TestModelEvacuation(t *testing.T) {
	for _, tc := range []struct {
		name      string
		peersDown bool
	}{{"to the peers", false}, {"no peer answers", true}} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSimHosts(1, t.TempDir(), newSimLogger(nil), 3)
			s.faults = false
			src := s.hosts[0]
			for _, d := range s.doms {
				s.finish(&startAct{d: d, h: src})
			}
			s.drainEvents()
			if tc.peersDown {
				s.hosts[1].helper, s.hosts[2].helper = nil, nil
			}
			s.do(option{name: "host1: lvhook evacuate", run: func() { s.evacuate(src) }})
			s.drainEvents()
			if s.failed() {
				t.Fatalf("violations: %v\n%s", s.violations, strings.Join(s.trace, "\n"))
			}
			on := map[string]int{}
			for _, d := range s.doms {
				if h := s.runningOn(d); h != nil {
					on[h.name]++
				}
			}
			if tc.peersDown {
				for _, h := range s.hosts[1:] {
					s.startHelper(h)
				}
				if s.stats.evacMigrated != 0 || s.stats.evacFallbacks != 3 || on["host2"]+on["host3"] != 0 {
					t.Errorf("stats %+v, running %v: want every domain given its fallback", s.stats.evacStats, on)
				}
			} else if s.stats.evacMigrated != 3 || on["host2"]+on["host3"] != 3 || on["host2"] == 0 || on["host3"] == 0 {
				t.Errorf("stats %+v, running %v: want the three migrated, spread over host2 and host3", s.stats.evacStats, on)
			}
			for range 100 {
				if len(s.settled()) == 0 {
					break
				}
				s.advance(3 * time.Second)
				for _, h := range s.hosts {
					s.do(option{name: h.name + ": helper tick", run: func() { h.helper.Tick(s.daemonCtx(h)) }})
				}
				s.drainEvents()
			}
			if bad := s.settled(); len(bad) > 0 || s.failed() {
				t.Errorf("after the evacuation: %v %v\n%s", bad, s.violations, strings.Join(s.trace, "\n"))
			}
		})
	}
}
