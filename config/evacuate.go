package config

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode"
)

// EvacuateConfig configures `lvhook evacuate`, which live-migrates this
// host's domains to its peers (by hand, or at shutdown through
// lvhook-evacuate.service).
type EvacuateConfig struct {
	// AtShutdown lets lvhook-evacuate.service evacuate the host when it
	// shuts down; without it the unit does nothing.
	AtShutdown bool `toml:"at_shutdown"`
	// Fallback is what happens to a domain that cannot be migrated, unless
	// its metadata says otherwise: one of EvacuateFallbacks.
	Fallback string `toml:"fallback"`
	// ShutdownTimeout bounds a guest's shutdown; it is then destroyed.
	ShutdownTimeout Duration `toml:"shutdown_timeout"`
	// MigrationTimeout bounds one live migration; its job is then aborted.
	MigrationTimeout Duration `toml:"migration_timeout"`
	// Timeout bounds the whole evacuation; keep it below the unit's
	// TimeoutStopSec (15 min).
	Timeout Duration `toml:"timeout"`
	// Parallel is how many domains migrate (or stop) at once, 1 to 8.
	Parallel int `toml:"parallel"`
	// MemoryMarginMiB is kept free on a peer beyond the memory of the
	// domains sent there.
	MemoryMarginMiB int `toml:"memory_margin_mib"`
}

// EvacuateFallbacks lists the values of evacuate.fallback (and of a domain's
// fallback attribute: domxml.Fallbacks).
var EvacuateFallbacks = []string{"managedsave", "shutdown", "leave"}

// EvacuateReserve is the time an evacuation keeps for its fallbacks beyond
// shutdown_timeout: the destroy of a guest that did not shut down.
const EvacuateReserve = 30 * time.Second

// Bounds of evacuate's numbers.
const (
	maxEvacuateParallel = 8
	maxMemoryMarginMiB  = 1 << 20 // 1 TiB
)

func defaultEvacuate() EvacuateConfig {
	return EvacuateConfig{
		Fallback:         "shutdown",
		ShutdownTimeout:  Duration(2 * time.Minute),
		MigrationTimeout: Duration(5 * time.Minute),
		Timeout:          Duration(10 * time.Minute),
		Parallel:         1,
		MemoryMarginMiB:  256,
	}
}

// validateEvacuate refuses the [evacuate] values and the peers' migration URIs
// lvhook evacuate cannot work with.
func (c Config) validateEvacuate() *Error {
	e := c.Evacuate
	bad := func(key, format string, a ...any) *Error {
		return &Error{Key: key, Msg: fmt.Sprintf(format, a...)}
	}
	// Its durations are positive (validate checks them with the others).
	switch {
	case !slices.Contains(EvacuateFallbacks, e.Fallback):
		n := len(EvacuateFallbacks)
		return bad("evacuate.fallback", "%q is not %s or %s", e.Fallback, strings.Join(EvacuateFallbacks[:n-1], ", "), EvacuateFallbacks[n-1])
	case e.Timeout.D() <= e.ShutdownTimeout.D()+EvacuateReserve:
		return bad("evacuate.timeout", "%q leaves the fallbacks no time: it must exceed shutdown_timeout (%q) by more than %s",
			e.Timeout.D(), e.ShutdownTimeout.D(), EvacuateReserve)
	case e.Parallel < 1 || e.Parallel > maxEvacuateParallel:
		return bad("evacuate.parallel", "must be between 1 and %d, got %d", maxEvacuateParallel, e.Parallel)
	case e.MemoryMarginMiB < 0 || e.MemoryMarginMiB > maxMemoryMarginMiB:
		return bad("evacuate.memory_margin_mib", "must be between 0 and %d, got %d", maxMemoryMarginMiB, e.MemoryMarginMiB)
	}
	for i, p := range c.Daemon.Peers {
		if p.LibvirtURI != "" {
			if err := checkURI(p.LibvirtURI); err != nil {
				return bad("daemon.peer.libvirt_uri", "%q in %s %v", p.LibvirtURI, peerLabel(i, p), err)
			}
			if u, _ := url.Parse(p.LibvirtURI); !strings.HasPrefix(u.Scheme, "qemu") {
				return bad("daemon.peer.libvirt_uri", "%q in %s is not a qemu URI (e.g. qemu+tls://%s/system)", p.LibvirtURI, peerLabel(i, p), p.Name)
			}
		}
		if p.MigrateURI != "" {
			if err := checkURI(p.MigrateURI); err != nil {
				return bad("daemon.peer.migrate_uri", "%q in %s %v", p.MigrateURI, peerLabel(i, p), err)
			}
		}
	}
	return nil
}

// checkURI accepts a URI with a scheme, without spaces or control
// characters, of at most 1024 bytes.
func checkURI(s string) error {
	u, err := url.Parse(s)
	switch {
	case len(s) > 1024:
		return fmt.Errorf("is longer than 1024 bytes")
	case strings.ContainsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }):
		return fmt.Errorf("holds a space or a control character")
	case err != nil || u.Scheme == "":
		return fmt.Errorf("is not a URI (scheme://host...)")
	}
	return nil
}

// MigrationURI is the peer's libvirtd for a peer-to-peer migration:
// libvirt_uri, or qemu+tls://NAME/system. A name that cannot be a URI's host
// is an error (set libvirt_uri).
func (p Peer) MigrationURI() (string, error) {
	if p.LibvirtURI != "" {
		return p.LibvirtURI, nil
	}
	host := p.Name
	if ip := net.ParseIP(strings.Trim(host, "[]")); ip != nil && ip.To4() == nil {
		host = "[" + ip.String() + "]"
	} else if !validHostName(host) {
		return "", fmt.Errorf("peer %q: its name is no host name for qemu+tls://NAME/system; set its libvirt_uri", p.Name)
	}
	return (&url.URL{Scheme: "qemu+tls", Host: host, Path: "/system"}).String(), nil
}

// validHostName accepts a DNS name or an IPv4 address: labels of letters,
// digits, "-" and "_", not starting with "-", separated by dots.
func validHostName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}
