package killvg

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/lvhook/lvhook/domxml"
	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/state"
	"github.com/lvhook/lvhook/virt"
)

// destroy destroys every domain running here that uses rec's VG and is not
// recorded destroyed yet: every active domain whose live XML names an LV of
// the VG (lvhook's or not: started before lvhook, opted out), and, when
// libvirt cannot give a domain's XML, those lvhook's records give the VG.
// Best effort, in parallel, within ctx: a domain that libvirt does not
// destroy runs on, its disks returning errors. Each result goes into
// rec.Domains.
func (k *Killer) destroy(ctx context.Context, rec *state.Killed, log zerolog.Logger) {
	vg := rec.VG
	want := map[string]string{} // uuid -> name
	recs, err := k.State.All(state.DomainsDir)
	if err != nil {
		log.Warn().Err(err).Msg("unreadable domain record skipped")
	}
	for _, r := range recs {
		if slices.ContainsFunc(r.LVs, func(l state.RecordLV) bool { return l.VG == vg }) {
			want[r.UUID] = r.Name
		}
	}
	result := func(uuid, name string, destroyed bool, why string) {
		i := slices.IndexFunc(rec.Domains, func(d state.KilledDomain) bool { return d.UUID == uuid })
		if i < 0 {
			rec.Domains = append(rec.Domains, state.KilledDomain{UUID: uuid})
			i = len(rec.Domains) - 1
		}
		rec.Domains[i] = state.KilledDomain{Name: name, UUID: uuid, Destroyed: destroyed, Error: why}
	}
	// Without libvirt's list, lvhook's records name the domains not
	// destroyed (an earlier run's destroys stand).
	noneDestroyed := func(why string) {
		for u, n := range want {
			if !slices.ContainsFunc(rec.Domains, func(d state.KilledDomain) bool { return d.UUID == u && d.Destroyed }) {
				result(u, n, false, why)
			}
		}
	}
	if k.Connect == nil {
		noneDestroyed("no libvirt connection configured")
		return
	}
	conn, err := k.Connect(ctx)
	if err != nil {
		log.Error().Err(err).Msg("cannot connect to libvirt: no domain destroyed")
		noneDestroyed("libvirt: " + err.Error())
		return
	}
	defer closeWithin(ctx, conn)
	active, err := conn.ActiveDomains(ctx)
	if err != nil {
		log.Error().Err(err).Msg("cannot list libvirt's domains: none destroyed")
		noneDestroyed("libvirt: " + err.Error())
		return
	}
	var mu sync.Mutex
	var victims []virt.Domain
	each(active, func(d virt.Domain) {
		uses, why := k.usesVG(ctx, conn, d, vg)
		mu.Lock()
		defer mu.Unlock()
		_, recorded := want[d.UUID]
		if why != "" {
			log.Warn().Str("domain", d.Name).Str("uuid", d.UUID).Str("why", why).Bool("recorded", recorded).
				Msg("cannot read the domain's XML: destroyed if lvhook's record, or a source path in the XML, names the VG")
		}
		// A readable XML decides (a disk detached since the start leaves
		// its LV in the record); else the record does.
		if uses || why != "" && recorded {
			victims = append(victims, d)
		}
	})
	for u, n := range want {
		if !slices.ContainsFunc(active, func(d virt.Domain) bool { return d.UUID == u }) {
			log.Info().Str("domain", n).Str("uuid", u).Msg("recorded, but not running: nothing to destroy")
		}
	}
	slices.SortFunc(victims, func(a, b virt.Domain) int { return strings.Compare(a.Name, b.Name) })
	each(victims, func(d virt.Domain) {
		mu.Lock()
		done := slices.ContainsFunc(rec.Domains, func(x state.KilledDomain) bool { return x.UUID == d.UUID && x.Destroyed })
		mu.Unlock()
		if done {
			return
		}
		start := time.Now()
		err := conn.Destroy(ctx, d.UUID)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err == nil || errors.Is(err, virt.ErrNoDomain):
			result(d.UUID, d.Name, true, "")
			log.Warn().Str("domain", d.Name).Str("uuid", d.UUID).Dur("took", time.Since(start)).Msg("domain destroyed")
		default:
			result(d.UUID, d.Name, false, lvmlock.OneLine(err.Error()))
			log.Error().Err(err).Str("domain", d.Name).Str("uuid", d.UUID).Dur("took", time.Since(start)).
				Msg("destroy failed: the domain runs on, its disks returning errors")
		}
	})
}

// usesVG tells whether d's live XML names an LV of vg. why says why the XML
// could not be read; then a source path under /dev/VG/ or /dev/mapper/VG-
// in the raw XML still counts.
func (k *Killer) usesVG(ctx context.Context, conn Libvirt, d virt.Domain, vg string) (uses bool, why string) {
	x, err := conn.DomainXML(ctx, d.UUID)
	if err != nil {
		return false, err.Error()
	}
	dom, err := domxml.Parse(x, k.Config.StoragePoolDir)
	if err != nil {
		dm := strings.ReplaceAll(vg, "-", "--")
		return bytes.Contains(x, []byte("/dev/"+vg+"/")) || bytes.Contains(x, []byte("/dev/mapper/"+dm+"-")), err.Error()
	}
	return slices.ContainsFunc(dom.Disks, func(disk domxml.Disk) bool { return disk.VG == vg }), ""
}

// closeWithin closes conn, waiting for libvirt's goodbye at most until ctx
// ends: kill-vg's deadline is not libvirt's to spend.
func closeWithin(ctx context.Context, conn Libvirt) {
	done := make(chan struct{})
	go func() {
		_ = conn.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}
