package virt

import (
	"context"
	"errors"
	"time"
)

// Libvirt is what the lock helper asks of the local libvirtd (check asks
// less: Domains, DomainXML and DomainJob). Domains are
// named by UUID in lowercase 8-4-4-4-12 form. Implementations must be safe for
// concurrent use: the peer server and the reconciler share one connection.
// Every call ends at the first of libvirtd's answer, its ctx's end and a call
// timeout: one that libvirtd does not answer in time fails, closes the
// connection, for every caller (Disconnected is then closed, and Run connects
// again), and leaves nothing running, so a hung libvirtd never stalls the lock
// helper.
type Libvirt interface {
	// ActiveDomains lists the domains whose QEMU runs here (running,
	// paused, including the paused destination of an incoming migration, or
	// crashed with its QEMU kept).
	ActiveDomains(ctx context.Context) ([]Domain, error)
	// DomainState is the state of an active domain; ErrNoDomain when the
	// domain is not defined or not active here.
	DomainState(ctx context.Context, uuid string) (DomainState, error)
	// DomainJob is the domain's current job (virDomainGetJobStats).
	DomainJob(ctx context.Context, uuid string) (Job, error)
	// DomainXML is the live domain XML.
	DomainXML(ctx context.Context, uuid string) ([]byte, error)
	// NodeFreeMemory is the host's free memory in bytes, as libvirt
	// reports it; the lock helper tells it to peers that evacuate.
	NodeFreeMemory(ctx context.Context) (uint64, error)
	// LifecycleEvents streams lifecycle events until ctx ends or the
	// connection is lost; the channel is then closed.
	LifecycleEvents(ctx context.Context) (<-chan Event, error)
	// Disconnected is closed when the connection to libvirtd is lost.
	Disconnected() <-chan struct{}
	// Close ends the connection.
	Close() error
}

// Connector opens a connection to the local libvirtd.
type Connector func(ctx context.Context) (Libvirt, error)

// ErrNoDomain: libvirt has no such active domain.
var ErrNoDomain = errors.New("no such active domain")

// Listed is a domain of Domains' list, with its state.
type Listed struct {
	Domain
	State DomainState
	// StateName is libvirt's name of the state: running, blocked, paused,
	// shutdown, shutoff, crashed, pmsuspended or nostate.
	StateName string
}

// Active tells whether a QEMU process exists for the domain here: every
// state but shut off (a crashed domain keeps its QEMU).
func (l Listed) Active() bool { return l.State != StateShutoff }

// Domain names a libvirt domain.
type Domain struct {
	Name string
	UUID string
}

// DomainState is a domain's libvirt state, reduced to what lvhook decides on.
type DomainState int

const (
	StateOther DomainState = iota
	StateRunning
	StatePaused
	StateShutoff
	// StateCrashed: the guest crashed and libvirt kept its QEMU process
	// (on_crash preserve). The domain is active: its LVs stay held, as a
	// paused one's do; it cannot be migrated.
	StateCrashed
)

func (s DomainState) String() string {
	return [...]string{"other", "running", "paused", "shut off", "crashed"}[s]
}

// JobKind is the operation of a domain's current job.
type JobKind int

const (
	// JobNone: no job.
	JobNone JobKind = iota
	// JobMigrationOut: an outgoing migration, from the source's Begin to
	// its Confirm.
	JobMigrationOut
	// JobMigrationIn: an incoming migration (libvirt refuses job statistics
	// on a migration's destination, which is how it shows).
	JobMigrationIn
	// JobOther: a job that is no migration (save, dump, snapshot, backup).
	JobOther
	// JobUnknown: a job whose operation libvirt did not say.
	JobUnknown
)

func (k JobKind) String() string {
	return [...]string{"none", "outgoing migration", "incoming migration", "other", "unknown"}[k]
}

// Job is a domain's current job.
type Job struct {
	Kind JobKind
	// Elapsed is how long the job has run, when libvirt says.
	Elapsed time.Duration
}

// EventKind is a lifecycle event, reduced to what the lock helper reacts to.
type EventKind int

const (
	EventOther EventKind = iota
	EventStarted
	EventStartedMigrated
	EventSuspended
	EventResumed
	// EventResumedMigrated: on the destination, the migration finished; on
	// the source, it failed or was cancelled and the guest runs here again.
	EventResumedMigrated
	EventStopped
	EventStoppedMigrated
	EventStoppedFailed
)

func (k EventKind) String() string {
	return [...]string{"other", "started", "started migrated", "suspended", "resumed",
		"resumed migrated", "stopped", "stopped migrated", "stopped failed"}[k]
}

// Event is one lifecycle event of a domain.
type Event struct {
	Domain
	Kind EventKind
}
