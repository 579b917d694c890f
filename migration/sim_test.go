package migration

// The model: a deterministic, seeded simulation of N hosts sharing VGs under
// lvmlockd (lvmfake), each with a fake libvirtd that calls the REAL hook
// (hook.Hook.Run) and emits lifecycle events in libvirt's order
// (docs/operator-guide.md, section 5), and the REAL lock helper (Helper: events, ticks,
// downgrade requests) and Handover, over an in-memory peer transport; a host
// may lose a VG's lease storage, and the REAL kill-vg and its recovery run
// (simloss_test.go). Time is a fake clock. Every step is followed by a check of the safety
// invariant (docs/operator-guide.md, section 1); every lvchange is checked as it happens (rule 4).
// Once a run, a host may evacuate itself with the REAL lvhook evacuate
// (sim_evacuate_test.go).
//
// Interleavings: one step at a time, chosen at random among the enabled
// ones; in addition some steps run nested inside others where real code
// waits: inside a hook's retry sleep and right after its handover (other
// hosts' lock helpers, cancellations), and inside a lock helper's libvirt
// calls (anything but that helper, including hooks on its own host and
// handovers that ask it to downgrade).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/lvhook/lvhook/config"
	"github.com/lvhook/lvhook/domxml"
	"github.com/lvhook/lvhook/hook"
	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/lvmlock/lvmfake"
	"github.com/lvhook/lvhook/peer"
	"github.com/lvhook/lvhook/state"
	"github.com/lvhook/lvhook/virt"
)

// nestKey marks the context of a lock helper's work in the model: a fake
// libvirt call made with it may run other steps first.
type nestKey struct{}

type simStats struct {
	steps, nested                      int
	starts, startsRefused, stops       int
	migrations, migrationsDone         int
	migrationsCancelled, prepareFailed int
	handoverYes, forged, forgedGranted int
	offline, staleMarkers, noPeerHosts int
	libvirtdRestarts, daemonRestarts   int
	anFailures                         int
	// migrateBegins: destination migrate begins (of live and offline
	// migrations) that asked for a reservation; reserveAsks: the
	// requests they sent.
	migrateBegins, reserveAsks int
	evacStats                  // sim_evacuate_test.go
	lossStats                  // simloss_test.go
}

func (a *simStats) add(b simStats) {
	a.steps += b.steps
	a.nested += b.nested
	a.starts += b.starts
	a.startsRefused += b.startsRefused
	a.stops += b.stops
	a.migrations += b.migrations
	a.migrationsDone += b.migrationsDone
	a.migrationsCancelled += b.migrationsCancelled
	a.prepareFailed += b.prepareFailed
	a.handoverYes += b.handoverYes
	a.forged += b.forged
	a.forgedGranted += b.forgedGranted
	a.offline += b.offline
	a.staleMarkers += b.staleMarkers
	a.noPeerHosts += b.noPeerHosts
	a.libvirtdRestarts += b.libvirtdRestarts
	a.daemonRestarts += b.daemonRestarts
	a.anFailures += b.anFailures
	a.migrateBegins += b.migrateBegins
	a.reserveAsks += b.reserveAsks
	a.evacStats.add(b.evacStats)
	a.lossStats.add(b.lossStats)
}

type simDom struct {
	name, uuid string
	disks      []domxml.Disk // LVs of shared VGs, with the mode they need
	xml        []byte
	busy       int  // starts, stops or migrations under way
	offline    bool // an offline migration is under way
	// begun counts the activities begun on it by anyone but lvhook
	// evacuate (the evacuation check's "did someone else act on it").
	begun int
}

// vm is a domain's presence on a host as libvirt has it: from the first hook
// of a start or incoming migration until its release end returned.
type vm struct {
	qemu      bool // QEMU runs (its LVs are open)
	paused    bool
	incoming  bool // destination waiting for the migration's Finish
	job       virt.JobKind
	jobStart  time.Time
	offline   bool // job is an offline migration's (virsh migrate --offline)
	inPrepare bool // the prepare hook is running
	destroyed bool // kill-vg destroyed it; libvirt's hooks follow
}

type simHost struct {
	id        int
	name      string
	state     *state.State
	hook      *hook.Hook
	helper    *Helper // nil while the lock helper is down
	libvirtUp bool
	// noPeers: this host's config names no [[daemon.peer]] (the shipped
	// default): its hook has no handover, every prepare is a start.
	noPeers bool
	connGen int
	events  []virt.Event
	vms     map[string]*vm
	failAn  map[lvmlock.Ref]int // -an refused ("in use") this many more times
	// rollbackOK: LVs a failed -aey may have converted; lvmlock's rollback
	// returns them to sh, which is no downgrade.
	rollbackOK map[lvmlock.Ref]bool
	// killed: VGs kill-vg killed here, until kill-vg --recover.
	killed map[string]bool
}

// peerPlan is what happens to successive requests to one peer during one
// handover: delivered, dropped, or delivered with the answer lost.
type peerPlan struct {
	outcomes []outcome
	next     int
}

type outcome int

const (
	delivered outcome = iota
	dropped
	answerLost
)

type sim struct {
	seed    int64
	rng     *rand.Rand
	n       int
	dir     string
	log     zerolog.Logger
	cluster *lvmfake.Cluster
	hosts   []*simHost
	doms    []*simDom
	acts    []activity
	// evacBegins: lvhook evacuate is beginning an activity (simEvac.drive).
	evacBegins bool
	faults     bool

	mu         sync.Mutex // what goroutines of the handover read
	clock      time.Time
	plans      map[string]*peerPlan
	violations []string
	// asks counts the requests memTransport carried, by path; sent
	// lists them as "path peer", in order.
	asks map[string]int
	sent []string

	depth int
	trace []string
	stats simStats
}

// activity is a start, stop or migration under way.
type activity interface {
	options(s *sim) []option
	done() bool
}

// option is one possible next step.
type option struct {
	name   string
	weight int
	// host is the host whose libvirt, hook or helper the step acts on.
	host int
	// bg: the step runs no hook and asks no peer, so it may run nested
	// inside a hook of another host.
	bg bool
	// daemonOf: the step is that host's lock helper at work.
	daemonOf int
	// fault: the step stops or restarts a daemon of host (never nested);
	// breaks: it stops one (drawn from the fault budget of the run).
	fault, breaks bool
	run           func()
}

func newSim(seed int64, dir string, log zerolog.Logger) *sim {
	return newSimHosts(seed, dir, log, 0)
}

// newSimHosts is newSim with n hosts (0: 2 or 3, drawn from the seed).
func newSimHosts(seed int64, dir string, log zerolog.Logger, n int) *sim {
	s := &sim{seed: seed, rng: rand.New(rand.NewSource(seed)), dir: dir, log: log,
		clock: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC), faults: true, asks: map[string]int{}}
	s.n = 2 + s.rng.Intn(2)
	if n > 0 {
		s.n = n
	}
	s.cluster = lvmfake.NewCluster(s.n)
	s.cluster.AddVG("vg0", true, "vm1-a", "vm1-b", "vm2-a")
	s.cluster.AddVG("vg1", true, "vm2-b", "vm3-a", "vm3-iso")
	s.cluster.AddVG("local", false, "vm1-scratch")
	s.doms = []*simDom{
		newSimDom(1, "/dev/vg0/vm1-a", "/dev/mapper/vg0-vm1--b", "/dev/local/vm1-scratch"),
		newSimDom(2, "/dev/vg0/vm2-a", "/dev/vg1/vm2-b"),
		newSimDom(3, "/dev/vg1/vm3-a", "shareable:/dev/vg1/vm3-iso"),
	}
	evacuationMetadata(seed, s.doms)
	for id := 1; id <= s.n; id++ {
		h := &simHost{id: id, name: fmt.Sprintf("host%d", id), libvirtUp: true, vms: map[string]*vm{},
			failAn: map[lvmlock.Ref]int{}, rollbackOK: map[lvmlock.Ref]bool{}, killed: map[string]bool{}}
		h.state = &state.State{Dir: filepath.Join(dir, h.name), Now: s.now}
		s.hosts = append(s.hosts, h)
	}
	if s.rng.Intn(4) == 0 {
		s.hosts[s.rng.Intn(s.n)].noPeers = true
		s.stats.noPeerHosts++
	}
	for _, h := range s.hosts {
		h.hook = s.newHook(h)
	}
	s.depth++ // nothing runs nested while the hosts boot
	for _, h := range s.hosts {
		s.startHelper(h)
	}
	s.depth--
	return s
}

func newSimDom(i int, sources ...string) *simDom {
	d := &simDom{name: fmt.Sprintf("vm%d", i), uuid: fmt.Sprintf("5e1f0c3a-7d21-4b8e-9c4f-00000000000%d", i)}
	var b strings.Builder
	fmt.Fprintf(&b, "<domain type='kvm'><name>%s</name><uuid>%s</uuid><devices>", d.name, d.uuid)
	for j, src := range sources {
		extra := ""
		if p, ok := strings.CutPrefix(src, "shareable:"); ok {
			src, extra = p, "<shareable/>"
		}
		fmt.Fprintf(&b, "<disk type='block' device='disk'><source dev='%s'/><target dev='vd%c'/>%s</disk>", src, 'a'+j, extra)
	}
	b.WriteString("</devices></domain>")
	d.xml = []byte(b.String())
	parsed, err := domxml.Parse(d.xml, "")
	if err != nil {
		panic(err)
	}
	for _, disk := range parsed.Disks {
		if disk.VG != "local" {
			d.disks = append(d.disks, disk)
		}
	}
	return d
}

func (s *sim) now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.clock
}

func (s *sim) advance(d time.Duration) {
	s.mu.Lock()
	s.clock = s.clock.Add(d)
	s.mu.Unlock()
}

func (s *sim) configOf(h *simHost) config.Config {
	cfg := config.Default()
	cfg.StateDir = h.state.Dir
	cfg.StoragePoolDir = filepath.Join(s.dir, "pools")
	cfg.Daemon.HostName = h.name
	for _, p := range s.hosts {
		if !h.noPeers {
			cfg.Daemon.Peers = append(cfg.Daemon.Peers, config.Peer{Name: p.name, Address: p.name, HostID: p.id})
		}
	}
	return cfg
}

func (s *sim) newHook(h *simHost) *hook.Hook {
	cfg := s.configOf(h)
	log := s.log.With().Str("host", h.name).Logger()
	ho := &peer.Handover{Self: h.name, Peers: cfg.Daemon.Peers, Timeout: cfg.Daemon.PeerTimeout.D(),
		Transport: &memTransport{s: s, from: h}, Log: log,
		Sleep: func(context.Context, time.Duration) error { return nil }}
	hk := &hook.Hook{
		Config: cfg,
		LVM:    &lvmlock.Client{Runner: &checkRunner{s: s, h: h}, RollbackTimeout: cfg.RollbackTimeout.D(), Log: log},
		State:  h.state,
		Log:    log,
		// lvmfake's sanlock reads: host h is host_id h, as configOf
		// configures the peers; migrate begin asks the holder first.
		Sanlock: &lvmlock.Sanlock{Runner: &checkRunner{s: s, h: h}},
		Sleep: func(ctx context.Context, d time.Duration) error {
			s.advance(d)
			s.nest(h.id, false)
			return nil
		},
	}
	if !h.noPeers {
		hk.Handover = &simHandover{s: s, h: h, ho: ho}
	}
	return hk
}

// simHandover is the real Handover, with the model's bookkeeping and its
// nested steps where the hook waits for the peers.
type simHandover struct {
	s  *sim
	h  *simHost
	ho *peer.Handover
}

func (w *simHandover) Reserve(ctx context.Context, d *domxml.Domain, holder int) (string, error) {
	before := w.s.asked(peer.ReservePath)
	src, err := w.ho.Reserve(ctx, d, holder)
	w.s.stats.migrateBegins++
	w.s.stats.reserveAsks += w.s.asked(peer.ReservePath) - before
	w.s.nest(w.h.id, false)
	return src, err
}

// asked returns how many requests to path memTransport carried.
func (s *sim) asked(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.asks[path]
}

func (w *simHandover) Downgrade(ctx context.Context, source string, d *domxml.Domain, refs []lvmlock.Ref) error {
	err := w.ho.Downgrade(ctx, source, d, refs)
	if err == nil {
		w.s.stats.handoverYes++
	}
	w.s.nest(w.h.id, false)
	return err
}

func (s *sim) startHelper(h *simHost) {
	cfg := s.configOf(h)
	log := s.log.With().Str("host", h.name).Str("role", "helper").Logger()
	h.helper = NewHelper(cfg, h.name, &lvmlock.Client{Runner: &checkRunner{s: s, h: h}, RollbackTimeout: cfg.RollbackTimeout.D(), Log: log},
		h.state, log)
	h.helper.Now = s.now
	h.helper.JobFlags = func(name string) (virt.JobFlags, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, d := range s.doms {
			if v := h.vms[d.uuid]; d.name == name && v != nil && v.qemu {
				switch {
				case v.job != virt.JobMigrationOut:
					return virt.JobFlags{Async: "none"}, nil
				case v.offline:
					return virt.JobFlags{Async: virt.AsyncMigrationOut, Flags: virt.MigrateOffline, Started: uint64(v.jobStart.UnixMilli())}, nil
				}
				return virt.JobFlags{Async: virt.AsyncMigrationOut, Flags: 0x1, Started: uint64(v.jobStart.UnixMilli())}, nil
			}
		}
		return virt.JobFlags{}, errors.New("no status file: the domain does not run")
	}
	h.events = nil
	if h.libvirtUp {
		h.helper.Connected(s.daemonCtx(h), &simConn{s: s, h: h, gen: h.connGen})
	}
}

func (s *sim) daemonCtx(h *simHost) context.Context {
	return context.WithValue(context.Background(), nestKey{}, h.id)
}

func (s *sim) host(name string) *simHost {
	for _, h := range s.hosts {
		if h.name == name {
			return h
		}
	}
	return nil
}

func (s *sim) tracef(format string, args ...any) {
	s.trace = append(s.trace, fmt.Sprintf("%8.1fs %s%s", s.now().Sub(time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)).Seconds(),
		strings.Repeat("  ", s.depth), fmt.Sprintf(format, args...)))
}

func (s *sim) violate(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.violations) < 20 {
		s.violations = append(s.violations, fmt.Sprintf(format, args...))
	}
}

func (s *sim) failed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.violations) > 0
}

// emit queues a lifecycle event for host's lock helper, if one listens.
func (s *sim) emit(h *simHost, d *simDom, k virt.EventKind) {
	if h.libvirtUp && h.helper != nil {
		h.events = append(h.events, virt.Event{Domain: virt.Domain{Name: d.name, UUID: d.uuid}, Kind: k})
	}
}

// callHook runs the real hook on h as libvirtd would, with the domain XML.
func (s *sim) callHook(h *simHost, d *simDom, op, subop string) error {
	ctx, cancel := context.WithTimeout(context.Background(), h.hook.Config.HookTimeout.D())
	defer cancel()
	extra := "-"
	err := h.hook.Run(ctx, hook.Call{Domain: d.name, Op: op, SubOp: subop, Extra: extra}, d.xml)
	if err != nil {
		s.tracef("%s: hook %s %s %s: %v", h.name, d.name, op, subop, err)
	} else {
		s.tracef("%s: hook %s %s %s: ok", h.name, d.name, op, subop)
	}
	return err
}

// open marks d's LVs open (QEMU uses them) or closed on h.
func (s *sim) open(h *simHost, d *simDom, open bool) {
	s.cluster.Do(func(c *lvmfake.Cluster) {
		for _, disk := range d.disks {
			if open {
				c.Open[h.id][disk.Ref] = true
			} else {
				delete(c.Open[h.id], disk.Ref)
			}
		}
	})
}

// allActive reports whether every LV of d is active on h: QEMU can open a
// disk only when its device node exists.
func (s *sim) allActive(h *simHost, d *simDom) bool {
	for _, disk := range d.disks {
		if s.cluster.Mode(h.id, disk.VG, disk.LV) == lvmlock.ModeNone {
			return false
		}
	}
	return true
}

func (s *sim) vmOf(h *simHost, d *simDom) *vm {
	s.mu.Lock()
	defer s.mu.Unlock()
	return h.vms[d.uuid]
}

func (s *sim) setVM(h *simHost, d *simDom, v *vm) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v == nil {
		delete(h.vms, d.uuid)
	} else {
		h.vms[d.uuid] = v
	}
}

// edit changes a vm under the lock goroutines read it with.
func (s *sim) edit(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f()
}

// runningOn returns the host where d runs idle (QEMU, not migrating).
func (s *sim) runningOn(d *simDom) *simHost {
	for _, h := range s.hosts {
		if v := s.vmOf(h, d); v != nil && v.qemu && !v.incoming && !v.paused && v.job == virt.JobNone {
			return h
		}
	}
	return nil
}

func (s *sim) involved(h *simHost) bool {
	for _, a := range s.acts {
		if inv, ok := a.(interface{ involves(*simHost) bool }); ok && inv.involves(h) {
			return true
		}
	}
	return false
}

// ---------------------------------------------------------------------------
// Steps

// options lists every enabled step.
func (s *sim) options(newWork bool) []option {
	if opts := s.prepareGap(); opts != nil {
		return opts
	}
	var opts []option
	for _, a := range s.acts {
		opts = append(opts, a.options(s)...)
	}
	for _, h := range s.hosts {
		if h.helper != nil && h.libvirtUp && len(h.events) > 0 {
			opts = append(opts, option{name: h.name + ": helper handles " + h.events[0].Kind.String() + " of " + h.events[0].Name,
				weight: 4, host: h.id, bg: true, daemonOf: h.id, run: func() {
					ev := h.events[0]
					h.events = h.events[1:]
					h.helper.HandleEvent(s.daemonCtx(h), ev)
				}})
		}
		if h.helper != nil && h.libvirtUp {
			opts = append(opts, option{name: h.name + ": helper tick", weight: 2, host: h.id, bg: true, daemonOf: h.id,
				run: func() { h.helper.Tick(s.daemonCtx(h)) }})
		}
	}
	opts = append(opts, option{name: "time passes", weight: 3, bg: true, run: func() {
		d := time.Duration(s.rng.ExpFloat64() * float64(4*time.Second))
		if s.rng.Intn(10) == 0 {
			d += 40 * time.Second
		}
		s.advance(d)
	}})
	if !newWork {
		return opts
	}
	for _, d := range s.doms {
		src := s.runningOn(d)
		for _, h := range s.hosts {
			if !h.libvirtUp || s.vmOf(h, d) != nil || s.involvedWith(h, d) {
				continue
			}
			if d.busy > 0 {
				// Another host starts the domain while it migrates,
				// starts or stops elsewhere: at most one may run it.
				opts = append(opts, option{name: fmt.Sprintf("%s: virsh start %s (busy elsewhere)", h.name, d.name), weight: 1, host: h.id,
					run: func() { s.begin(&startAct{d: d, h: h}) }})
				continue
			}
			w := 4
			if src != nil || s.presentAnywhere(d) {
				w = 1 // a second start while it runs elsewhere: must be refused
			}
			opts = append(opts, option{name: fmt.Sprintf("%s: virsh start %s", h.name, d.name), weight: w, host: h.id,
				run: func() { s.begin(&startAct{d: d, h: h}) }})
			if src != nil && src != h && src.libvirtUp {
				opts = append(opts, option{name: fmt.Sprintf("virsh migrate --live %s %s -> %s", d.name, src.name, h.name),
					weight: 8, host: src.id, run: func() { s.begin(&migAct{d: d, s: src, t: h}) }})
			}
			if !d.offline && (src == nil || src != h && src.libvirtUp) {
				opts = append(opts, option{name: fmt.Sprintf("virsh migrate --offline %s -> %s", d.name, h.name),
					weight: 2, host: h.id, run: func() { s.begin(&offAct{d: d, s: src, t: h}) }})
			}
		}
		if d.busy == 0 && src != nil && src.libvirtUp {
			opts = append(opts, option{name: fmt.Sprintf("%s: virsh destroy %s", src.name, d.name), weight: 2, host: src.id,
				run: func() { s.begin(&stopAct{d: d, h: src}) }})
		}
	}
	if s.faults {
		opts = append(opts, option{name: "a stale incoming-migration marker", weight: 1, bg: true, breaks: true, run: s.staleMarker})
		for _, h := range s.hosts {
			if o, ok := s.evacuationOption(h); ok {
				opts = append(opts, o)
			}
		}
	}
	if !s.faults {
		return opts
	}
	for _, h := range s.hosts {
		switch {
		case h.libvirtUp && !s.involved(h):
			opts = append(opts, option{name: h.name + ": libvirtd stops", weight: 1, host: h.id, fault: true, breaks: true, run: func() { s.libvirtdDown(h) }})
		case !h.libvirtUp:
			opts = append(opts, option{name: h.name + ": libvirtd starts", weight: 6, host: h.id, fault: true, run: func() { s.libvirtdUp(h) }})
		}
		if h.helper != nil {
			opts = append(opts, option{name: h.name + ": lock helper stops", weight: 1, host: h.id, fault: true, breaks: true, run: func() {
				h.helper, h.events = nil, nil
			}})
		} else {
			opts = append(opts, option{name: h.name + ": lock helper starts", weight: 6, host: h.id, fault: true, run: func() {
				s.stats.daemonRestarts++
				s.startHelper(h)
			}})
		}
	}
	opts = append(opts, option{name: "forged downgrade request", weight: 1, bg: true, breaks: true, run: s.forge})
	return append(opts, s.lossOptions()...)
}

// prepareGap: between a live migration's Begin on the source and the
// destination's Prepare (migrate begin) there is one libvirt call, no human
// time: no hook of another activity runs in it and no new work starts. Only
// that migration's next step and what runs no hook (lock helpers, events,
// time) may. Without this the model would let a whole offline migration and
// a start on a third host fit in that gap, a race lvhook cannot close with
// libvirt's hooks (the guide's limits) and libvirt's timing leaves no room
// for.
func (s *sim) prepareGap() []option {
	var gap []option
	for _, a := range s.acts {
		if m, ok := inGap(a); ok {
			gap = append(gap, m.options(s)...)
		}
	}
	if gap == nil {
		return nil
	}
	for _, a := range s.acts {
		if _, ok := inGap(a); !ok {
			for _, o := range a.options(s) {
				if o.bg {
					gap = append(gap, o)
				}
			}
		}
	}
	for _, h := range s.hosts {
		if h.helper != nil && h.libvirtUp {
			gap = append(gap, option{name: h.name + ": helper tick", weight: 2, host: h.id, bg: true, daemonOf: h.id,
				run: func() { h.helper.Tick(s.daemonCtx(h)) }})
		}
	}
	return gap
}

// inGap tells a live migration between its Begin and the destination's
// Prepare, or cancelled there and not yet over on the source (the job ends
// as promptly).
func inGap(a activity) (*migAct, bool) {
	m, ok := a.(*migAct)
	return m, ok && m.phase == mMigrateBegin && !m.done()
}

// involvedWith tells whether an activity of d involves h.
func (s *sim) involvedWith(h *simHost, d *simDom) bool {
	for _, a := range s.acts {
		if inv, ok := a.(interface {
			involves(*simHost) bool
			dom() *simDom
		}); ok && inv.dom() == d && inv.involves(h) {
			return true
		}
	}
	return false
}

// staleMarker leaves an incoming-migration marker naming a source on a host
// where the domain is not: left over from an older migration, or written by
// something else. It must never be enough for sh.
func (s *sim) staleMarker() {
	h := s.hosts[s.rng.Intn(s.n)]
	src := s.hosts[s.rng.Intn(s.n)]
	d := s.doms[s.rng.Intn(len(s.doms))]
	if s.vmOf(h, d) != nil || h == src {
		return
	}
	age := time.Duration(s.rng.Int63n(int64(50 * time.Second)))
	if err := h.state.MarkIncoming(d.uuid, state.Incoming{At: s.now().Add(-age).UTC(), Source: src.name}); err != nil {
		s.violate("writing a marker: %v", err)
	}
	s.stats.staleMarkers++
	s.tracef("stale marker on %s for %s naming %s, %s old", h.name, d.name, src.name, age)
}

func (s *sim) presentAnywhere(d *simDom) bool {
	for _, h := range s.hosts {
		if s.vmOf(h, d) != nil {
			return true
		}
	}
	return false
}

func (s *sim) begin(a activity) {
	if d, ok := a.(interface{ dom() *simDom }); ok && !s.evacBegins {
		d.dom().begun++
	}
	switch a := a.(type) {
	case *startAct:
		a.d.busy++
		s.stats.starts++
	case *stopAct:
		a.d.busy++
		s.stats.stops++
	case *migAct:
		a.d.busy++
		s.stats.migrations++
	case *offAct:
		a.d.offline = true
		s.stats.offline++
	}
	s.acts = append(s.acts, a)
}

func (s *sim) libvirtdDown(h *simHost) {
	s.stats.libvirtdRestarts++
	h.libvirtUp = false
	h.events = nil
	if h.helper != nil {
		h.helper.Disconnected()
	}
}

// libvirtdUp: libvirtd starts again, calls reconnect begin for each running
// guest (a hook that must never fail), and the lock helper reconnects.
func (s *sim) libvirtdUp(h *simHost) {
	h.libvirtUp = true
	h.connGen++
	for _, d := range s.doms {
		if v := s.vmOf(h, d); v != nil && v.qemu {
			if err := s.callHook(h, d, "reconnect", "begin"); err != nil {
				s.violate("%s: reconnect begin of %s failed (libvirt kills the guest): %v", h.name, d.name, err)
			}
		}
	}
	if h.helper != nil {
		h.helper.Connected(s.daemonCtx(h), &simConn{s: s, h: h, gen: h.connGen})
	}
}

// forge sends a downgrade request no migration asked for, sometimes for a
// domain that does migrate: only the source of a migration of that domain
// may say yes (checked by checkRunner).
func (s *sim) forge() {
	from := s.hosts[s.rng.Intn(s.n)]
	to := s.hosts[s.rng.Intn(s.n)]
	d := s.doms[s.rng.Intn(len(s.doms))]
	if from == to || to.helper == nil {
		return
	}
	req := peer.Request{Domain: d.name, UUID: d.uuid, TimeoutMS: 10000}
	for _, disk := range d.disks {
		req.LVs = append(req.LVs, peer.LVRef{VG: disk.VG, LV: disk.LV})
	}
	if s.rng.Intn(3) == 0 {
		other := s.doms[s.rng.Intn(len(s.doms))]
		req.LVs = append(req.LVs, peer.LVRef{VG: other.disks[0].VG, LV: other.disks[0].LV})
	}
	s.stats.forged++
	if s.rng.Intn(2) == 0 {
		// A peer that lies: it reserves a handover it is no
		// destination of, as its migrate begin would.
		r := to.helper.Reserve(context.Background(), from.name, peer.Request{Domain: d.name, UUID: d.uuid, TimeoutMS: 10000})
		s.tracef("forged reservation %s -> %s for %s: granted=%v %s", from.name, to.name, d.name, r.Granted, r.Reason)
	}
	ans := to.helper.Downgrade(context.Background(), from.name, req)
	if ans.Granted {
		s.stats.forgedGranted++
	}
	s.tracef("forged request %s -> %s for %s: granted=%v %s", from.name, to.name, d.name, ans.Granted, ans.Reason)
}

// step runs one option, then checks the invariant.
func (s *sim) do(o option) {
	s.advance(time.Millisecond) // real time never stands still
	s.tracef("%s", o.name)
	s.stats.steps++
	o.run()
	s.acts = slices.DeleteFunc(s.acts, func(a activity) bool {
		if a.done() {
			switch a := a.(type) {
			case *startAct:
				a.d.busy--
			case *stopAct:
				a.d.busy--
			case *migAct:
				a.d.busy--
			case *offAct:
				a.d.offline = false
			}
			return true
		}
		return false
	})
	s.check()
}

func (s *sim) pick(opts []option) option {
	total := 0
	for _, o := range opts {
		total += o.weight
	}
	n := s.rng.Intn(total)
	for _, o := range opts {
		if n < o.weight {
			return o
		}
		n -= o.weight
	}
	return opts[len(opts)-1]
}

// nest runs, sometimes, one or two steps where real code waits. inDaemon:
// host excl's lock helper is waiting for libvirt (its host lock is free), so
// anything but that helper may run; otherwise a hook of excl holds its host
// lock, so only steps that run no hook and ask no peer, elsewhere, may run.
func (s *sim) nest(excl int, inDaemon bool) {
	if s.depth > 0 || s.rng.Intn(4) != 0 {
		return
	}
	var allowed []option
	for _, o := range s.options(inDaemon && s.faults) {
		switch {
		case o.fault:
		case inDaemon && o.daemonOf == excl:
		case !inDaemon && (!o.bg || o.host == excl || o.daemonOf == excl):
		default:
			allowed = append(allowed, o)
		}
	}
	if len(allowed) == 0 {
		return
	}
	s.depth++
	defer func() { s.depth-- }()
	for range 1 + s.rng.Intn(2) {
		s.stats.nested++
		s.do(s.pick(allowed))
		allowed = nil
		for _, o := range s.options(false) {
			if !o.fault && o.bg && o.host != excl && o.daemonOf != excl {
				allowed = append(allowed, o)
			}
		}
		if len(allowed) == 0 {
			return
		}
	}
}

// ---------------------------------------------------------------------------
// Activities, in libvirt's order of calls and events (operator guide, section 5)

// startAct is virsh start: prepare -> start -> QEMU -> started; a failure
// after prepare began gives stopped end + release end.
type startAct struct {
	d        *simDom
	h        *simHost
	phase    int
	failed   bool
	td       teardown
	finished bool
}

func (a *startAct) involves(h *simHost) bool { return h == a.h }
func (a *startAct) dom() *simDom             { return a.d }
func (a *startAct) done() bool               { return a.finished || a.td.finished }

func (a *startAct) options(s *sim) []option {
	h, d := a.h, a.d
	name := func(what string) string { return fmt.Sprintf("%s: start %s: %s", h.name, d.name, what) }
	if !h.libvirtUp {
		return nil
	}
	if a.failed {
		return a.td.options(s, h, d, name, virt.EventStoppedFailed)
	}
	switch a.phase {
	case 0:
		return []option{{name: name("prepare begin"), weight: 10, host: h.id, run: func() {
			s.setVM(h, d, &vm{inPrepare: true})
			err := s.callHook(h, d, "prepare", "begin")
			s.edit(func() { h.vms[d.uuid].inPrepare = false })
			if err != nil {
				s.stats.startsRefused++
				a.failed = true
				return
			}
			a.phase++
		}}}
	case 1:
		return []option{{name: name("start begin"), weight: 10, host: h.id, run: func() {
			if s.callHook(h, d, "start", "begin") != nil {
				a.failed = true
				return
			}
			a.phase++
		}}}
	case 2:
		return []option{{name: name("QEMU starts"), weight: 10, host: h.id, bg: true, run: func() {
			if !s.allActive(h, d) || s.rng.Intn(30) == 0 {
				s.tracef("QEMU of %s failed to start on %s", d.name, h.name)
				a.failed = true
				return
			}
			s.edit(func() { h.vms[d.uuid].qemu = true })
			s.open(h, d, true)
			a.phase++
		}}}
	default:
		return []option{{name: name("started begin"), weight: 10, host: h.id, run: func() {
			_ = s.callHook(h, d, "started", "begin")
			s.emit(h, d, virt.EventStarted)
			a.finished = true
		}}}
	}
}

// teardown is the end of every stop: QEMU killed, stopped end, then release
// end (sometimes with a deactivation lvm refuses: in use), then the event.
type teardown struct {
	stopped, hadQemu, finished bool
}

func (td *teardown) options(s *sim, h *simHost, d *simDom, name func(string) string, ev virt.EventKind) []option {
	v := s.vmOf(h, d)
	switch {
	case td.finished:
		return nil
	case v == nil:
		td.finished = true
		return nil
	case !td.stopped:
		return []option{{name: name("QEMU killed, stopped end"), weight: 10, host: h.id, run: func() {
			if v.qemu {
				td.hadQemu = true
				s.edit(func() { v.qemu, v.paused, v.incoming, v.job = false, false, false, virt.JobNone })
				s.open(h, d, false)
			}
			_ = s.callHook(h, d, "stopped", "end")
			td.stopped = true
		}}}
	}
	return []option{{name: name("release end"), weight: 10, host: h.id, run: func() {
		if s.faults && s.rng.Intn(12) == 0 {
			disk := d.disks[s.rng.Intn(len(d.disks))]
			s.edit(func() { h.failAn[disk.Ref] = 1 + s.rng.Intn(3) })
			s.stats.anFailures++
		}
		_ = s.callHook(h, d, "release", "end")
		s.setVM(h, d, nil)
		if td.hadQemu {
			s.emit(h, d, ev)
		}
		td.finished = true
	}}}
}

// stopAct is virsh destroy (or shutdown, or a crash).
type stopAct struct {
	d  *simDom
	h  *simHost
	td teardown
}

func (a *stopAct) involves(h *simHost) bool { return h == a.h }
func (a *stopAct) dom() *simDom             { return a.d }
func (a *stopAct) done() bool               { return a.td.finished }

func (a *stopAct) options(s *sim) []option {
	if !a.h.libvirtUp {
		return nil
	}
	name := func(what string) string { return fmt.Sprintf("%s: stop %s: %s", a.h.name, a.d.name, what) }
	return a.td.options(s, a.h, a.d, name, virt.EventStopped)
}

// migAct is virsh migrate --live from s to t, with its cancellations.
type migAct struct {
	d      *simDom
	s, t   *simHost
	phase  int
	failed bool
	// preparing: the destination's prepare hook runs (a cancel on the
	// source may come meanwhile).
	preparing bool
	// After a failure or cancel: the destination tears down and the
	// source recovers, in any order.
	td                teardown
	destDone, srcDone bool
	finished          bool
}

func (a *migAct) involves(h *simHost) bool { return h == a.s || h == a.t }
func (a *migAct) dom() *simDom             { return a.d }
func (a *migAct) done() bool {
	return a.finished || a.failed && a.srcDone && (a.destDone || a.td.finished)
}

const (
	mBegin = iota
	mMigrateBegin
	mPrepare
	mStart
	mLaunch
	mStarted
	mPerform
	mFinish
	mDestJobEnd
	mConfirm
	mRelease
)

func (a *migAct) options(s *sim) []option {
	src, dst, d := a.s, a.t, a.d
	name := func(what string) string {
		return fmt.Sprintf("migrate %s %s->%s: %s", d.name, src.name, dst.name, what)
	}
	if a.failed {
		return a.recovery(s, name)
	}
	var opts []option
	// Cancellation: virsh domjobabort, a client that goes away, Perform or
	// Finish failing, the destination's QEMU dying. Not between the
	// destination's migrate begin and prepare (one libvirt call).
	if a.phase > mBegin && (a.phase != mPrepare || a.preparing) && a.phase <= mFinish && s.faults {
		opts = append(opts, option{name: name("cancelled"), weight: 1, host: src.id, bg: true, run: func() {
			s.stats.migrationsCancelled++
			a.failed = true
			a.destDone = s.vmOf(dst, d) == nil
		}})
		if v := s.vmOf(dst, d); v != nil && v.qemu {
			opts = append(opts, option{name: name("destination QEMU dies"), weight: 1, host: dst.id, bg: true, run: func() {
				s.stats.migrationsCancelled++
				s.edit(func() { v.qemu, v.incoming, v.job = false, false, virt.JobNone })
				s.open(dst, d, false)
				a.td.hadQemu = true
				a.failed = true
			}})
		}
	}
	switch a.phase {
	case mBegin:
		// Begin on the source: the outgoing job starts; no hook, no event.
		opts = append(opts, option{name: name("Begin (source job starts)"), weight: 10, host: src.id, bg: true, run: func() {
			v := s.vmOf(src, d)
			if v.job != virt.JobNone {
				// libvirt refuses a second job (an offline migration
				// began first): nothing happened anywhere.
				s.tracef("live migration of %s refused at Begin on %s: another job", d.name, src.name)
				a.finished = true
				return
			}
			s.edit(func() { v.job, v.jobStart = virt.JobMigrationOut, s.clock })
			a.phase++
		}})
	case mMigrateBegin:
		// libvirt's Prepare on the destination: migrate begin, then (in
		// the same call) prepare begin, which asks for the handover.
		opts = append(opts, option{name: name("destination migrate begin + prepare begin"), weight: 10, host: dst.id, run: func() {
			s.setVM(dst, d, &vm{job: virt.JobMigrationIn})
			if s.callHook(dst, d, "migrate", "begin") != nil {
				s.setVM(dst, d, nil) // no stopped/release follow
				a.failed, a.destDone = true, true
				return
			}
			if s.faults && s.rng.Intn(12) == 0 {
				// libvirt fails after the migrate hook (another
				// qemu.d hook, the domain definition): no prepare,
				// and a fresh marker with a reservation is left.
				s.tracef("destination Prepare failed after migrate begin")
				s.setVM(dst, d, nil)
				a.failed, a.destDone = true, true
				return
			}
			s.drawPlans(dst)
			s.edit(func() { dst.vms[d.uuid].inPrepare = true })
			a.phase, a.preparing = mPrepare, true
			err := s.callHook(dst, d, "prepare", "begin")
			a.preparing = false
			s.edit(func() { dst.vms[d.uuid].inPrepare = false })
			if err != nil {
				s.stats.prepareFailed++
				a.failed = true
				return
			}
			a.phase = mStart
		}})
	case mStart:
		opts = append(opts, option{name: name("destination start begin"), weight: 10, host: dst.id, run: func() {
			_ = s.callHook(dst, d, "start", "begin")
			a.phase++
		}})
	case mLaunch:
		opts = append(opts, option{name: name("destination QEMU starts -incoming"), weight: 10, host: dst.id, bg: true, run: func() {
			if !s.allActive(dst, d) {
				s.tracef("destination QEMU cannot open the disks")
				a.failed = true
				return
			}
			v := s.vmOf(dst, d)
			s.edit(func() { v.qemu, v.paused, v.incoming = true, true, true })
			s.open(dst, d, true)
			a.phase++
		}})
	case mStarted:
		opts = append(opts, option{name: name("destination started begin"), weight: 10, host: dst.id, run: func() {
			_ = s.callHook(dst, d, "started", "begin")
			s.emit(dst, d, virt.EventStartedMigrated)
			a.phase++
		}})
	case mPerform:
		opts = append(opts, option{name: name("Perform: memory copied, source paused"), weight: 10, host: src.id, bg: true, run: func() {
			v := s.vmOf(src, d)
			s.edit(func() { v.paused = true })
			s.emit(src, d, virt.EventSuspended)
			a.phase++
		}})
	case mFinish:
		opts = append(opts, option{name: name("Finish: destination resumed"), weight: 10, host: dst.id, bg: true, run: func() {
			v := s.vmOf(dst, d)
			s.edit(func() { v.paused, v.incoming = false, false })
			s.emit(dst, d, virt.EventResumedMigrated)
			a.phase++
		}})
	case mDestJobEnd:
		opts = append(opts, option{name: name("destination job ends"), weight: 10, host: dst.id, bg: true, run: func() {
			v := s.vmOf(dst, d)
			s.edit(func() { v.job = virt.JobNone })
			a.phase++
		}})
	case mConfirm:
		if !src.libvirtUp {
			return opts
		}
		opts = append(opts, option{name: name("Confirm: source QEMU killed, stopped end"), weight: 10, host: src.id, run: func() {
			v := s.vmOf(src, d)
			s.edit(func() { v.qemu = false })
			s.open(src, d, false)
			_ = s.callHook(src, d, "stopped", "end")
			a.phase++
		}})
	case mRelease:
		opts = append(opts, option{name: name("source release end"), weight: 10, host: src.id, run: func() {
			if s.faults && s.rng.Intn(12) == 0 {
				disk := d.disks[s.rng.Intn(len(d.disks))]
				s.edit(func() { src.failAn[disk.Ref] = 1 + s.rng.Intn(3) })
				s.stats.anFailures++
			}
			_ = s.callHook(src, d, "release", "end")
			s.setVM(src, d, nil)
			s.emit(src, d, virt.EventStoppedMigrated)
			s.stats.migrationsDone++
			a.finished = true
		}})
	}
	return opts
}

// offAct is virsh migrate --offline: on the source, Begin takes an outgoing
// migration job when the domain runs there (it keeps running); the
// destination gets migrate begin and nothing else; the source's Confirm
// ends the job. Nothing stops a start on the destination between its Finish
// and the source's Confirm.
type offAct struct {
	d        *simDom
	s, t     *simHost // s is nil when the domain runs nowhere
	phase    int
	hadJob   bool
	finished bool
}

func (a *offAct) involves(h *simHost) bool { return h == a.s || h == a.t }
func (a *offAct) dom() *simDom             { return a.d }
func (a *offAct) done() bool               { return a.finished }

func (a *offAct) options(s *sim) []option {
	src, dst, d := a.s, a.t, a.d
	name := func(what string) string { return fmt.Sprintf("migrate --offline %s ->%s: %s", d.name, dst.name, what) }
	switch a.phase {
	case 0:
		return []option{{name: name("Begin"), weight: 10, bg: true, run: func() {
			if src != nil {
				v := s.vmOf(src, d)
				if v == nil || !v.qemu || v.paused || v.job != virt.JobNone {
					// libvirt refuses a second job (or the domain
					// stopped meanwhile: nothing left to model).
					s.tracef("offline migration of %s refused at Begin on %s", d.name, src.name)
					a.finished = true
					return
				}
				s.edit(func() { v.job, v.jobStart, v.offline = virt.JobMigrationOut, s.clock, true })
				a.hadJob = true
			}
			a.phase++
		}}}
	case 1:
		if !dst.libvirtUp {
			return nil
		}
		return []option{{name: name("destination migrate begin, Prepare and Finish"), weight: 10, host: dst.id, run: func() {
			_ = s.callHook(dst, d, "migrate", "begin")
			a.phase++
		}}}
	}
	return []option{{name: name("source Confirm: the job ends"), weight: 10, bg: true, run: func() {
		if a.hadJob {
			if v := s.vmOf(src, d); v != nil {
				s.edit(func() { v.job, v.offline = virt.JobNone, false })
			}
		}
		a.finished = true
	}}}
}

// recovery: the destination's teardown (stopped end, release end) and the
// source's recovery (resume, RESUMED_MIGRATED, job ends), in any order.
func (a *migAct) recovery(s *sim, name func(string) string) []option {
	var opts []option
	if !a.destDone {
		if v := s.vmOf(a.t, a.d); v == nil {
			a.destDone = true
		} else if a.t.libvirtUp {
			opts = append(opts, a.td.options(s, a.t, a.d, func(w string) string { return name("destination " + w) }, virt.EventStoppedFailed)...)
		}
		if a.td.finished {
			a.destDone = true
		}
	}
	if !a.srcDone {
		opts = append(opts, option{name: name("source recovers"), weight: 10, host: a.s.id, bg: true, run: func() {
			v := s.vmOf(a.s, a.d)
			wasPaused := v.paused
			s.edit(func() { v.paused, v.job = false, virt.JobNone })
			if wasPaused {
				s.emit(a.s, a.d, virt.EventResumedMigrated)
			}
			a.srcDone = true
		}})
	}
	if a.destDone && a.srcDone {
		a.finished = true
	}
	return opts
}

// drawPlans decides, before a handover, what happens to the requests to each
// peer (drawn here, not in the handover's goroutines, to stay deterministic).
func (s *sim) drawPlans(from *simHost) {
	plans := map[string]*peerPlan{}
	for _, h := range s.hosts {
		if h == from || !s.faults {
			continue
		}
		p := &peerPlan{}
		switch s.rng.Intn(10) {
		case 0, 1:
			for range 1 + s.rng.Intn(3) {
				p.outcomes = append(p.outcomes, outcome(1+s.rng.Intn(2)))
			}
		case 2:
			for range 100 { // unreachable for the whole handover
				p.outcomes = append(p.outcomes, dropped)
			}
		}
		plans[h.name] = p
	}
	s.mu.Lock()
	s.plans = plans
	s.mu.Unlock()
}

// ---------------------------------------------------------------------------
// Seams

// memTransport delivers a handover's requests to the peers' helpers.
type memTransport struct {
	s    *sim
	from *simHost
}

func (t *memTransport) Ask(ctx context.Context, dst config.Peer, path string, req peer.Request) (peer.Answer, error) {
	s := t.s
	to := s.host(dst.Name)
	s.mu.Lock()
	s.asks[path]++
	s.sent = append(s.sent, path+" "+dst.Name)
	what := delivered
	if p := s.plans[dst.Name]; p != nil && p.next < len(p.outcomes) {
		what = p.outcomes[p.next]
		p.next++
	}
	s.mu.Unlock()
	if to == nil || to.helper == nil {
		return peer.Answer{}, errors.New("connection refused")
	}
	if what == dropped {
		return peer.Answer{}, context.DeadlineExceeded
	}
	decide := to.helper.Downgrade
	if path == peer.ReservePath {
		decide = to.helper.Reserve
	}
	ans := decide(ctx, t.from.name, req)
	if what == answerLost {
		return peer.Answer{}, errors.New("connection reset before the answer")
	}
	return ans, nil
}

// simConn is a lock helper's connection to its host's fake libvirtd.
type simConn struct {
	s   *sim
	h   *simHost
	gen int
}

func (c *simConn) enter(ctx context.Context) error {
	if id, ok := ctx.Value(nestKey{}).(int); ok && id == c.h.id {
		c.s.nest(c.h.id, true)
	}
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	if !c.h.libvirtUp || c.h.connGen != c.gen {
		return errors.New("connection to libvirtd closed")
	}
	return nil
}

func (c *simConn) ActiveDomains(ctx context.Context) ([]virt.Domain, error) {
	if err := c.enter(ctx); err != nil {
		return nil, err
	}
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	var out []virt.Domain
	for _, d := range c.s.doms {
		if v := c.h.vms[d.uuid]; v != nil && v.qemu {
			out = append(out, virt.Domain{Name: d.name, UUID: d.uuid})
		}
	}
	return out, nil
}

func (c *simConn) dom(uuid string) (*simDom, *vm) {
	for _, d := range c.s.doms {
		if d.uuid == uuid {
			return d, c.h.vms[uuid]
		}
	}
	return nil, nil
}

func (c *simConn) DomainState(ctx context.Context, uuid string) (virt.DomainState, error) {
	if err := c.enter(ctx); err != nil {
		return virt.StateOther, err
	}
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	d, v := c.dom(uuid)
	switch {
	case d == nil:
		return virt.StateOther, virt.ErrNoDomain
	case v == nil || !v.qemu:
		return virt.StateShutoff, nil
	case v.paused:
		return virt.StatePaused, nil
	}
	return virt.StateRunning, nil
}

func (c *simConn) DomainJob(ctx context.Context, uuid string) (virt.Job, error) {
	if err := c.enter(ctx); err != nil {
		return virt.Job{}, err
	}
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	d, v := c.dom(uuid)
	if d == nil || v == nil || !v.qemu {
		return virt.Job{}, fmt.Errorf("%w: domain is not running", virt.ErrNoDomain)
	}
	j := virt.Job{Kind: v.job}
	if v.job == virt.JobMigrationOut {
		j.Elapsed = c.s.clock.Sub(v.jobStart)
	}
	return j, nil
}

func (c *simConn) DomainXML(ctx context.Context, uuid string) ([]byte, error) {
	if err := c.enter(ctx); err != nil {
		return nil, err
	}
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	d, _ := c.dom(uuid)
	if d == nil {
		return nil, virt.ErrNoDomain
	}
	return d.xml, nil
}

// NodeFreeMemory: 16 GiB, less 1 GiB for each domain whose QEMU runs here.
func (c *simConn) NodeFreeMemory(ctx context.Context) (uint64, error) {
	doms, err := c.ActiveDomains(ctx)
	if err != nil {
		return 0, err
	}
	return uint64(16-len(doms)) << 30, nil
}

func (c *simConn) LifecycleEvents(context.Context) (<-chan virt.Event, error) {
	return nil, errors.New("the model delivers events itself")
}
func (c *simConn) Disconnected() <-chan struct{} { return nil }
func (c *simConn) Close() error                  { return nil }

// checkRunner runs lvm commands on the fake cluster and checks each
// lvchange against rule 4 of the invariant as it happens: an LV is
// activated only for a domain libvirt is starting or receiving here (its
// prepare hook runs), converted sh -> ex only for a domain present here, and
// dropped ex -> sh only on a host where libvirt shows that domain's outgoing
// migration job. It also injects the "in use" refusals of -an.
type checkRunner struct {
	s *sim
	h *simHost
}

func (r *checkRunner) Run(ctx context.Context, name string, args ...string) ([]byte, []byte, error) {
	s, h := r.s, r.h
	inner := s.cluster.Host(h.id)
	if name != "lvchange" || len(args) == 0 {
		return inner.Run(ctx, name, args...)
	}
	flag := args[0]
	var refs []lvmlock.Ref
	var rest []string
	for i := 1; i < len(args); i++ {
		if args[i] == "--select" {
			rest = append(rest, args[i], args[i+1])
			i++
			continue
		}
		if args[i] == "--" {
			rest = append(rest, args[i])
			continue
		}
		vg, lv, _ := strings.Cut(args[i], "/")
		refs = append(refs, lvmlock.Ref{VG: vg, LV: lv})
	}
	before := map[lvmlock.Ref]lvmlock.Mode{}
	for _, ref := range refs {
		before[ref] = s.cluster.Mode(h.id, ref.VG, ref.LV)
	}
	s.checkChange(h, flag, refs, before)

	var refused []lvmlock.Ref
	if flag == "-an" {
		s.mu.Lock()
		for _, ref := range refs {
			if h.failAn[ref] > 0 && before[ref] != lvmlock.ModeNone {
				h.failAn[ref]--
				refused = append(refused, ref)
			}
		}
		s.mu.Unlock()
	}
	argv := []string{flag}
	argv = append(argv, rest...)
	for _, ref := range refs {
		if !slices.Contains(refused, ref) {
			argv = append(argv, ref.String())
		}
	}
	var stdout, stderr []byte
	var err error
	if len(argv) > 1+len(rest) {
		stdout, stderr, err = inner.Run(ctx, name, argv...)
	}
	for _, ref := range refused {
		stderr = append(stderr, fmt.Sprintf("  Logical volume %s in use.\n", ref)...)
		err = lvmfake.ExitError{Code: 5}
	}
	s.mu.Lock()
	clear(h.rollbackOK)
	if flag == "-aey" && err != nil {
		for _, ref := range refs {
			if before[ref] == lvmlock.ModeSh {
				h.rollbackOK[ref] = true
			}
		}
	}
	s.mu.Unlock()
	return stdout, stderr, err
}

func (s *sim) owner(ref lvmlock.Ref) *simDom {
	for _, d := range s.doms {
		for _, disk := range d.disks {
			if disk.Ref == ref {
				return d
			}
		}
	}
	return nil
}

// exclusive tells an LV a domain needs ex (not <shareable/>).
func (s *sim) exclusive(ref lvmlock.Ref) bool {
	for _, d := range s.doms {
		for _, disk := range d.disks {
			if disk.Ref == ref {
				return disk.Mode == lvmlock.ModeEx
			}
		}
	}
	return false
}

func (s *sim) checkChange(h *simHost, flag string, refs []lvmlock.Ref, before map[lvmlock.Ref]lvmlock.Mode) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checkKilledChange(h, flag, refs)
	for _, ref := range refs {
		d := s.owner(ref)
		if d == nil {
			continue // an LV of a local VG: lvchange --select skips it
		}
		v := h.vms[d.uuid]
		from := before[ref]
		switch {
		case flag == "-an":
		case from == lvmlock.ModeNone && (v == nil || !v.inPrepare):
			s.violations = append(s.violations, fmt.Sprintf("rule 4: %s %s on %s, where libvirt is not starting or receiving %s", flag, ref, h.name, d.name))
		case flag == "-aey" && from == lvmlock.ModeSh && v == nil:
			s.violations = append(s.violations, fmt.Sprintf("rule 4: -aey %s on %s converts the LV of %s, which is not there", ref, h.name, d.name))
		case flag == "-asy" && from == lvmlock.ModeEx && !h.rollbackOK[ref] && (v == nil || v.job != virt.JobMigrationOut || v.offline):
			s.violations = append(s.violations, fmt.Sprintf("rule 4: -asy %s on %s drops ex to sh without an outgoing live migration job of %s there", ref, h.name, d.name))
		case flag == "-asy" && from == lvmlock.ModeNone && s.exclusive(ref) && v.job != virt.JobMigrationIn:
			s.violations = append(s.violations, fmt.Sprintf("rule 4: -asy %s on %s, which is no live migration's destination of %s", ref, h.name, d.name))
		}
	}
}

// ---------------------------------------------------------------------------
// The invariant

// check verifies, after every step, what must hold at every moment.
func (s *sim) check() {
	pendingOf := map[int]map[lvmlock.Ref]bool{}
	pending := func(h *simHost) map[lvmlock.Ref]bool {
		if p, ok := pendingOf[h.id]; ok {
			return p
		}
		p := map[lvmlock.Ref]bool{}
		recs, _ := h.state.All(state.PendingDir)
		for _, r := range recs {
			for _, l := range r.LVs {
				p[l.Ref()] = true
			}
		}
		pendingOf[h.id] = p
		return p
	}
	writers := map[string][]string{}
	for _, d := range s.doms {
		for _, disk := range d.disks {
			holders := s.cluster.Holders(disk.VG, disk.LV)
			ex := 0
			for _, m := range holders {
				if m == lvmlock.ModeEx {
					ex++
				}
			}
			if ex > 0 && len(holders) > 1 {
				s.violate("%s held ex together with others: %v", disk.Ref, holders)
			}
			// A <shareable/> disk is sh wherever it is used: only the
			// exclusive ones are bound to two hosts, during a migration.
			if len(holders) > 2 && disk.Mode == lvmlock.ModeEx {
				s.violate("%s held by %d hosts: %v", disk.Ref, len(holders), holders)
			}
			for id := range holders {
				h := s.hosts[id-1]
				if s.vmOf(h, d) == nil && !pending(h)[disk.Ref] {
					s.violate("%s active on %s, where %s neither runs nor has a pending deactivation", disk.Ref, h.name, d.name)
				}
			}
		}
		for _, h := range s.hosts {
			v := s.vmOf(h, d)
			if v == nil || !v.qemu {
				continue
			}
			if !s.allActive(h, d) {
				s.violate("QEMU of %s runs on %s without all its LVs active", d.name, h.name)
			}
			if !v.paused && !v.incoming {
				writers[d.name] = append(writers[d.name], h.name)
			}
		}
		if len(writers[d.name]) > 1 {
			s.violate("%s runs on %v at once", d.name, writers[d.name])
		}
	}
	s.checkWritable()
}

// settled is the final check, once every activity has ended and every lock
// helper has had time: a running domain holds its LVs alone, ex (sh for
// shareable disks), with its record complete; a stopped one holds nothing;
// nothing is pending and no problem is reported.
func (s *sim) settled() []string {
	var bad []string
	for _, d := range s.doms {
		var on []*simHost
		for _, h := range s.hosts {
			if s.vmOf(h, d) != nil {
				on = append(on, h)
			}
		}
		if len(on) > 1 {
			bad = append(bad, fmt.Sprintf("%s present on %d hosts", d.name, len(on)))
			continue
		}
		for _, disk := range d.disks {
			got := s.cluster.Holders(disk.VG, disk.LV)
			want := map[int]lvmlock.Mode{}
			if len(on) == 1 {
				want[on[0].id] = disk.Mode
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				bad = append(bad, fmt.Sprintf("%s of %s held %v, want %v", disk.Ref, d.name, got, want))
			}
		}
		if len(on) == 1 {
			rec, ok, err := on[0].state.Load(state.DomainsDir, d.uuid)
			switch {
			case err != nil || !ok:
				bad = append(bad, fmt.Sprintf("%s runs on %s without a domain record (%v)", d.name, on[0].name, err))
			case rec.Incoming:
				bad = append(bad, fmt.Sprintf("%s on %s still recorded as incoming", d.name, on[0].name))
			}
		}
	}
	for _, h := range s.hosts {
		if recs, _ := h.state.All(state.PendingDir); len(recs) > 0 {
			bad = append(bad, fmt.Sprintf("%s: pending deactivation left: %v", h.name, recs))
		}
		if probs, _ := h.state.Problems(); len(probs) > 0 {
			bad = append(bad, fmt.Sprintf("%s: problems left: %+v", h.name, probs))
		}
	}
	return bad
}

// run plays the simulation: steps random steps with faults, then the
// quiescence (every daemon up, no new work, no faults) and the final check.
func (s *sim) run(steps int) {
	for range steps {
		if s.failed() {
			return
		}
		// Breaking something is one step in 25; the rest is the
		// cluster's life, repairs included.
		var faults, normal []option
		for _, o := range s.options(true) {
			if o.breaks {
				faults = append(faults, o)
			} else {
				normal = append(normal, o)
			}
		}
		if len(faults) > 0 && s.rng.Intn(25) == 0 {
			s.do(s.pick(faults))
		} else {
			s.do(s.pick(normal))
		}
	}
	s.faults = false
	s.tracef("--- quiescence")
	for _, h := range s.hosts {
		if !h.libvirtUp {
			s.do(option{name: h.name + ": libvirtd starts", run: func() { s.libvirtdUp(h) }})
		}
		if h.helper == nil {
			s.do(option{name: h.name + ": lock helper starts", run: func() { s.startHelper(h) }})
		}
	}
	for i := 0; len(s.acts) > 0; i++ {
		if s.failed() {
			return
		}
		if i > 5000 {
			s.violate("activities did not finish: %d left", len(s.acts))
			return
		}
		s.do(s.pick(s.options(false)))
	}
	for range 200 {
		if s.failed() {
			return
		}
		for _, h := range s.hosts {
			for len(h.events) > 0 {
				ev := h.events[0]
				h.events = h.events[1:]
				s.do(option{name: h.name + ": helper handles " + ev.Kind.String() + " of " + ev.Name,
					run: func() { h.helper.HandleEvent(s.daemonCtx(h), ev) }})
			}
		}
		if len(s.settled()) == 0 {
			return
		}
		s.advance(3 * time.Second)
		for _, h := range s.hosts {
			s.do(option{name: h.name + ": helper tick", run: func() { h.helper.Tick(s.daemonCtx(h)) }})
		}
	}
	for _, b := range s.settled() {
		s.violate("not settled: %s", b)
	}
}

// newSimLogger logs to w, or nowhere.
func newSimLogger(w io.Writer) zerolog.Logger {
	if w == nil {
		return zerolog.Nop()
	}
	return zerolog.New(zerolog.ConsoleWriter{Out: w, NoColor: true, PartsExclude: []string{zerolog.TimestampFieldName}})
}
