package peer

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/lvhook/lvhook/lvmlock"
)

// What a peer sends is checked here, by one set of rules, before any of it
// reaches libvirt or lvm (rule 5 of the invariant): VG and LV names by
// lvmlock.ValidRef, the rule the hook applies to domain XMLs; a domain UUID
// in libvirt's canonical form; a domain name as libvirt allows it. The server
// refuses a request that fails them with 400 and runs nothing.

// Bounds on the number of LVs one request may name.
const (
	maxDowngradeLVs = 1024
	maxHoldersLVs   = 4096
)

// maxDomainName bounds a domain name: libvirt keeps a running domain's
// status in /run/libvirt/qemu/NAME.xml, so a longer name (NAME_MAX 255, less
// ".xml") cannot run.
const maxDomainName = 251

// Check applies the peer channel's rules to a reservation (no LVs) or a
// downgrade request (the LVs to hand over), by its path.
func (r Request) Check(path string) error {
	if err := checkDomainName(r.Domain); err != nil {
		return err
	}
	if err := checkUUID(r.UUID); err != nil {
		return err
	}
	if path == ReservePath {
		if len(r.LVs) != 0 {
			return fmt.Errorf("a reservation names no LVs, this one %d", len(r.LVs))
		}
		return nil
	}
	if len(r.LVs) == 0 || len(r.LVs) > maxDowngradeLVs {
		return fmt.Errorf("%d LVs, not 1 to %d", len(r.LVs), maxDowngradeLVs)
	}
	return checkLVRefs(r.LVs)
}

// Check applies the peer channel's rules to a holders request.
func (r HoldersRequest) Check() error {
	if len(r.LVs) > maxHoldersLVs {
		return fmt.Errorf("%d LVs, more than %d", len(r.LVs), maxHoldersLVs)
	}
	return checkLVRefs(r.LVs)
}

func checkLVRefs(lvs []LVRef) error {
	for _, l := range lvs {
		if err := lvmlock.ValidRef(lvmlock.Ref{VG: l.VG, LV: l.LV}); err != nil {
			return err
		}
	}
	return nil
}

// checkUUID accepts a UUID as libvirt writes it in a domain XML: 36
// characters, hex digits in groups of 8-4-4-4-12.
func checkUUID(s string) error {
	ok := len(s) == 36
	for i := 0; ok && i < len(s); i++ {
		switch c := s[i]; i {
		case 8, 13, 18, 23:
			ok = c == '-'
		default:
			ok = c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
		}
	}
	if !ok {
		return fmt.Errorf("%q is not a domain UUID", s)
	}
	return nil
}

// checkDomainName accepts a name libvirt would give a domain: not empty, no
// "/" (libvirt refuses it), no control character (libvirt refuses a
// newline; none belongs in a log line), valid UTF-8, bounded.
func checkDomainName(s string) error {
	bad := s == "" || len(s) > maxDomainName || !utf8.ValidString(s) || strings.Contains(s, "/") ||
		strings.ContainsFunc(s, unicode.IsControl)
	if bad {
		return fmt.Errorf("%q is not a domain name", s)
	}
	return nil
}

// Bounds on a capacity answer: more free memory than 1 PiB, or more domains
// than this, is no host's; a peer that says so is not believed.
const (
	maxFreeMemory    = 1 << 50
	maxActiveDomains = 100000
)

// Check applies the peer channel's rules to a capacity answer, which an
// evacuation plans with: numbers a host can have, a printable name.
func (a CapacityAnswer) Check() error {
	switch {
	case a.FreeMemoryBytes < 0 || a.FreeMemoryBytes > maxFreeMemory:
		return fmt.Errorf("free_memory_bytes %d is no host's free memory (0 to 1 PiB)", a.FreeMemoryBytes)
	case a.ActiveDomains < 0 || a.ActiveDomains > maxActiveDomains:
		return fmt.Errorf("active_domains %d is no host's count (0 to %d)", a.ActiveDomains, maxActiveDomains)
	case len(a.Host) > 253 || !utf8.ValidString(a.Host) || strings.ContainsFunc(a.Host, unicode.IsControl):
		return fmt.Errorf("host %q is not a host name", a.Host)
	case len(a.Error) > 4096 || !utf8.ValidString(a.Error):
		return errors.New("error is longer than 4096 bytes or not UTF-8")
	}
	return nil
}
