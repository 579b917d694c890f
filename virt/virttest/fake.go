// Package virttest holds the test doubles of package virt: Fake, a host's
// libvirtd in memory, and helpers for tests that drive a real Conn against
// go-libvirt's mock or a libvirtd that hangs.
package virttest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lvhook/lvhook/virt"
)

// Fake is a host's libvirtd for unit tests: domains with a state, a job and
// an XML, and an event channel. It implements virt.Libvirt and Domains.
type Fake struct {
	mu   sync.Mutex
	doms map[string]*FakeDomain
	// Events carries the lifecycle events a test sends; Gone, once
	// closed, is a lost connection.
	Events chan virt.Event
	Gone   chan struct{}
	calls  int
	// FreeMemory is NodeFreeMemory's answer, in bytes.
	FreeMemory uint64
	// Stopped, when set, is called (the fake unlocked) each time a domain
	// stops here through the fake's own calls: "migrated", "saved",
	// "shutdown", "destroyed"; a test releases the domain's LVs there, as
	// libvirt runs the hook's release end.
	Stopped func(uuid, reason string)
	// actions lists what was done to domains, in order (Actions).
	actions               []string
	inFlight, maxInFlight int
}

// FakeDomain is one domain of a Fake.
type FakeDomain struct {
	Name  string
	State virt.DomainState
	Job   virt.Job
	XML   string
	// JobErr, when set, is DomainJob's answer.
	JobErr error
	// Offline marks its migration job as an offline one.
	Offline bool
	// Started is its job's start, as libvirt's status file has it.
	Started uint64
	// Autostart is virsh autostart's flag.
	Autostart bool
	// Memory is DomainMemory's answer, in bytes.
	Memory uint64
	// MigrateErr, when set, fails its migrations.
	MigrateErr error
	// MigrateHold, when set, holds each migration until it is closed, the
	// migration's timeout passes or its ctx ends; the last two abort it.
	MigrateHold chan struct{}
	// IgnoresShutdown: the guest does not react to Shutdown.
	IgnoresShutdown bool
	// StopErr, when set, fails ManagedSave, Shutdown and Destroy;
	// ShutdownErr fails Shutdown alone (libvirt refuses it for a crashed
	// guest).
	StopErr, ShutdownErr error
	// ManagedSaved: a managed save stopped it.
	ManagedSaved bool
}

// jobs numbers the fakes' jobs: each one started is a new one.
var jobs atomic.Uint64

// NewFake returns a libvirtd with no domain.
func NewFake() *Fake {
	return &Fake{doms: map[string]*FakeDomain{}, Events: make(chan virt.Event, 16), Gone: make(chan struct{})}
}

// Run makes a domain known here, in state (shut off: defined, not active)
// with a job of the given kind.
func (f *Fake) Run(name, uuid string, state virt.DomainState, job virt.JobKind, xml string) *FakeDomain {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := &FakeDomain{Name: name, State: state, Job: virt.Job{Kind: job, Elapsed: 3 * time.Second}, XML: xml, Started: jobs.Add(1)}
	f.doms[uuid] = d
	return d
}

// Domain returns the domain of uuid, for a test to change (under Do).
func (f *Fake) Domain(uuid string) *FakeDomain {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.doms[uuid]
}

// Do runs change with the fake locked.
func (f *Fake) Do(change func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change()
}

// Stop forgets a domain.
func (f *Fake) Stop(uuid string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.doms, uuid)
}

// SetJob starts a new job of kind for a domain.
func (f *Fake) SetJob(uuid string, kind virt.JobKind) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.doms[uuid].Job.Kind = kind
	f.doms[uuid].Started = jobs.Add(1)
}

// Calls counts the calls made so far; ResetCalls sets it back to 0.
func (f *Fake) Calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func (f *Fake) ResetCalls() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = 0
}

// JobFlags is what libvirt's status file tells of a domain's job.
func (f *Fake) JobFlags(name string) (virt.JobFlags, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, d := range f.doms {
		switch {
		case d.Name != name:
		case d.Job.Kind != virt.JobMigrationOut:
			return virt.JobFlags{Async: "none"}, nil
		case d.Offline:
			return virt.JobFlags{Async: virt.AsyncMigrationOut, Flags: virt.MigrateOffline | 0x8, Started: d.Started}, nil // offline|persist_dest
		default:
			return virt.JobFlags{Async: virt.AsyncMigrationOut, Flags: 0x1 | 0x2, Started: d.Started}, nil // live|peer2peer
		}
	}
	return virt.JobFlags{}, errors.New("libvirt's status file: no such file or directory")
}

func (f *Fake) get(uuid string, active bool) (*FakeDomain, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	d := f.doms[uuid]
	if d == nil || active && d.State == virt.StateShutoff {
		return nil, fmt.Errorf("%w: %s", virt.ErrNoDomain, uuid)
	}
	return d, nil
}

// Domains lists every domain with its state, sorted by UUID.
func (f *Fake) Domains(context.Context) ([]virt.Listed, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	var out []virt.Listed
	for u, d := range f.doms {
		out = append(out, virt.Listed{Domain: virt.Domain{Name: d.Name, UUID: u}, State: d.State, StateName: stateName(d.State)})
	}
	slices.SortFunc(out, func(a, b virt.Listed) int { return strings.Compare(a.UUID, b.UUID) })
	return out, nil
}

// stateName is libvirt's name of the fake's states.
func stateName(s virt.DomainState) string {
	return map[virt.DomainState]string{virt.StateRunning: "running", virt.StatePaused: "paused",
		virt.StateShutoff: "shutoff", virt.StateCrashed: "crashed"}[s]
}

// ActiveDomains lists the domains that are not shut off, sorted by UUID.
func (f *Fake) ActiveDomains(ctx context.Context) ([]virt.Domain, error) {
	listed, _ := f.Domains(ctx)
	var out []virt.Domain
	for _, l := range listed {
		if l.Active() {
			out = append(out, l.Domain)
		}
	}
	return out, nil
}

func (f *Fake) DomainState(_ context.Context, uuid string) (virt.DomainState, error) {
	d, err := f.get(uuid, true)
	if err != nil {
		return virt.StateOther, err
	}
	return d.State, nil
}

func (f *Fake) DomainJob(_ context.Context, uuid string) (virt.Job, error) {
	d, err := f.get(uuid, true)
	if err != nil {
		return virt.Job{}, err
	}
	return d.Job, d.JobErr
}

func (f *Fake) DomainAutostart(_ context.Context, uuid string) (bool, error) {
	d, err := f.get(uuid, false)
	if err != nil {
		return false, err
	}
	return d.Autostart, nil
}

func (f *Fake) DomainXML(_ context.Context, uuid string) ([]byte, error) {
	d, err := f.get(uuid, false)
	if err != nil {
		return nil, err
	}
	return []byte(d.XML), nil
}

func (f *Fake) LifecycleEvents(context.Context) (<-chan virt.Event, error) { return f.Events, nil }
func (f *Fake) Disconnected() <-chan struct{}                              { return f.Gone }
func (f *Fake) Close() error                                               { return nil }

var _ virt.Libvirt = (*Fake)(nil)
