package domxml

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// EvacuateAttrs are the attributes of lvhook's metadata element that
// `lvhook evacuate` reads, as written (nil when absent):
//
//	<lvhook:domain xmlns:lvhook="https://lvhook.dev/xmlns/domain/1" priority="10" fallback="managedsave"/>
//
// The hook ignores them, whatever they hold: a typo there must never refuse
// a start or a stop.
type EvacuateAttrs struct {
	Priority, Fallback *string
}

// Evacuation is how `lvhook evacuate` treats a domain.
type Evacuation struct {
	// Priority orders the domains: the highest is migrated first and, among
	// those that must stop here, stopped last. -1000 to 1000, default 0.
	Priority int
	// Fallback is what happens to the domain when it cannot be migrated:
	// one of Fallbacks, or "" for the configured default.
	Fallback string
}

// The fallbacks of a domain that cannot be migrated (config.EvacuateFallbacks
// lists the same for evacuate.fallback).
const (
	FallbackManagedSave = "managedsave"
	FallbackShutdown    = "shutdown"
	FallbackLeave       = "leave"
)

// Fallbacks lists the fallback values, in the order messages name them.
var Fallbacks = []string{FallbackManagedSave, FallbackShutdown, FallbackLeave}

// Bounds of a domain's evacuation priority.
const (
	MinPriority = -1000
	MaxPriority = 1000
)

// Evacuation reads the evacuation attributes. A value it cannot use is an
// error of one line naming the domain and the attribute; the Evacuation
// returned then holds the defaults for what could not be read.
func (d *Domain) Evacuation() (Evacuation, error) {
	var ev Evacuation
	var errs []string
	if p := d.Evacuate.Priority; p != nil {
		n, err := strconv.Atoi(strings.TrimSpace(*p))
		if err != nil || n < MinPriority || n > MaxPriority {
			errs = append(errs, fmt.Sprintf("priority=%q is not an integer from %d to %d", *p, MinPriority, MaxPriority))
		} else {
			ev.Priority = n
		}
	}
	if f := d.Evacuate.Fallback; f != nil {
		v := strings.ToLower(strings.TrimSpace(*f))
		if slices.Contains(Fallbacks, v) {
			ev.Fallback = v
		} else {
			errs = append(errs, fmt.Sprintf("fallback=%q is not %s", *f, orList(Fallbacks)))
		}
	}
	if len(errs) > 0 {
		return ev, fmt.Errorf("domain %s: lvhook metadata: %s", show(d.Name), strings.Join(errs, "; "))
	}
	return ev, nil
}

// orList renders ["a", "b", "c"] as "a, b or c".
func orList(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}
