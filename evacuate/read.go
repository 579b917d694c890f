package evacuate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/lvhook/lvhook/domxml"
	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/peer"
	"github.com/lvhook/lvhook/virt"
)

// Libvirt is what the evacuation asks of the local libvirtd (virt.Conn, on
// the read-write socket). Domains are named by UUID.
type Libvirt interface {
	Domains(ctx context.Context) ([]virt.Listed, error)
	DomainXML(ctx context.Context, uuid string) ([]byte, error)
	DomainJob(ctx context.Context, uuid string) (virt.Job, error)
	DomainState(ctx context.Context, uuid string) (virt.DomainState, error)
	DomainMemory(ctx context.Context, uuid string) (uint64, error)
	Migrate(ctx context.Context, uuid string, m virt.Migration) error
	ManagedSave(ctx context.Context, uuid string, timeout time.Duration) error
	Shutdown(ctx context.Context, uuid string) error
	Destroy(ctx context.Context, uuid string) error
}

// readDomains reads every active domain of this host: libvirt's state, job
// and memory, the XML's LVs and lvhook metadata, and whether an LV cannot be
// shared (one lvs for all). Only the list is needed: what cannot be read of
// a domain makes it one that cannot move.
func (e *Evacuator) readDomains(ctx context.Context) ([]Domain, error) {
	listed, err := e.Libvirt.Domains(ctx)
	if err != nil {
		return nil, fmt.Errorf("list libvirt's domains: %w", err)
	}
	var doms []Domain
	var vgs []string
	for _, l := range listed {
		if !l.Active() {
			continue
		}
		d, gone := e.readDomain(ctx, l)
		if gone {
			continue
		}
		for _, disk := range d.Disks {
			if !slices.Contains(vgs, disk.VG) {
				vgs = append(vgs, disk.VG)
			}
		}
		doms = append(doms, d)
	}
	if len(vgs) == 0 {
		return doms, nil
	}
	slices.Sort(vgs)
	st, err := e.LVM.State(ctx, false, vgs...)
	if err != nil {
		e.say(nil, "cannot read the LVs' types (%s): migrations are tried whatever they are", lvmlock.Reason(err))
		return doms, nil
	}
	for i := range doms {
		for _, disk := range doms[i].Disks {
			lv, ok := st.LVs[disk.Ref]
			if doms[i].CannotMove != "" || disk.Mode != lvmlock.ModeEx || !ok || !lv.Shared() {
				continue
			}
			if why := lv.SharedActivationProblem(); why != "" {
				doms[i].CannotMove = fmt.Sprintf("%s is %s: it cannot be shared for a live migration", disk.Ref, why)
			}
		}
	}
	return doms, nil
}

// readDomain reads one listed domain; gone: it stopped meanwhile.
func (e *Evacuator) readDomain(ctx context.Context, l virt.Listed) (d Domain, gone bool) {
	d = Domain{Name: l.Name, UUID: l.UUID, State: l.State, Fallback: e.Config.Evacuate.Fallback}
	cannot := func(format string, a ...any) {
		if d.CannotMove == "" {
			d.CannotMove = fmt.Sprintf(format, a...)
		}
	}
	job, err := e.Libvirt.DomainJob(ctx, l.UUID)
	switch {
	case errors.Is(err, virt.ErrNoDomain):
		return d, true
	case err != nil:
		cannot("its job cannot be read: %v", err)
	}
	d.Job = job.Kind
	if l.State == virt.StateCrashed {
		cannot("crashed (libvirt keeps its QEMU): a crashed domain cannot be migrated")
	}
	if d.Memory, err = e.Libvirt.DomainMemory(ctx, l.UUID); err != nil {
		cannot("its memory size cannot be read: %v", err)
	}
	x, err := e.Libvirt.DomainXML(ctx, l.UUID)
	if err != nil {
		cannot("its XML cannot be read: %v", err)
		return d, false
	}
	dom, err := domxml.Parse(x, e.Config.StoragePoolDir)
	if err != nil {
		// Its destination's hook could not read it either.
		cannot("%v", err)
		return d, false
	}
	ev, err := dom.Evacuation()
	if err != nil {
		d.MetaErr = err.Error() + " (priority 0 and the configured fallback apply)"
	}
	d.Priority = ev.Priority
	if ev.Fallback != "" {
		d.Fallback = ev.Fallback
	}
	// An opted-out domain's LVs are not lvhook's: none to check.
	if !dom.OptedOut {
		d.Disks = dom.Disks
	}
	d.DisksKnown = true
	return d, false
}

// probePeers asks every other configured peer its capacity, at once, each
// within peer_timeout, and tells what each answered. Sorted by name.
func (e *Evacuator) probePeers(ctx context.Context) []Peer {
	var peers []Peer
	for _, p := range e.Config.Daemon.Peers {
		if !strings.EqualFold(p.Name, e.Host) {
			peers = append(peers, Peer{Peer: p})
		}
	}
	slices.SortFunc(peers, func(a, b Peer) int { return strings.Compare(a.Name, b.Name) })
	timeout := e.Config.Daemon.PeerTimeout.D()
	var wg sync.WaitGroup
	for i := range peers {
		p := &peers[i]
		uri, err := p.MigrationURI()
		if err != nil {
			p.Err = "unusable (" + err.Error() + ")"
			continue
		}
		p.URI = uri
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			ans, err := e.Peers.AskCapacity(cctx, p.Peer, peer.CapacityRequest{TimeoutMS: timeout.Milliseconds()})
			switch {
			case err != nil:
				p.Err = "unreachable (" + lvmlock.OneLine(err.Error()) + ")"
			case !ans.LibvirtUp:
				p.Err = "without libvirt (" + lvmlock.OneLine(ans.Error) + ")"
			}
			p.Capacity = ans
		})
	}
	wg.Wait()
	for _, p := range peers {
		switch {
		case p.Err != "":
			e.sayPeer(p, "peer %s: %s: it takes no domain", p.Name, p.Err)
		case p.Capacity.Draining:
			e.sayPeer(p, "peer %s: draining (it evacuates itself): it takes no domain", p.Name)
		default:
			e.sayPeer(p, "peer %s: %s free, %d domains running", p.Name, Size(uint64(p.Capacity.FreeMemoryBytes)), p.Capacity.ActiveDomains)
		}
	}
	return peers
}
