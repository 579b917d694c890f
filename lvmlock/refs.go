package lvmlock

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// JoinRefs renders refs as "vg/a, vg/b".
func JoinRefs(refs []Ref) string {
	s := make([]string, len(refs))
	for i, r := range refs {
		s[i] = r.String()
	}
	return strings.Join(s, ", ")
}

// VGsOf lists the VGs of refs, sorted, each once.
func VGsOf(refs []Ref) []string {
	var vgs []string
	for _, r := range refs {
		if !slices.Contains(vgs, r.VG) {
			vgs = append(vgs, r.VG)
		}
	}
	slices.Sort(vgs)
	return vgs
}

// RefsOf lists the LVs of targets, in order.
func RefsOf(ts []Target) []Ref {
	refs := make([]Ref, len(ts))
	for i, t := range ts {
		refs[i] = t.Ref
	}
	return refs
}

// Reason is the short reason of an error for log and report lines: an lvm
// failure's Reason, any other error's text.
func Reason(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason()
	}
	return err.Error()
}

// HostLabel names a sanlock host_id for the operator: "kvm2 (host_id 2)",
// or "host_id 2" without a name.
func HostLabel(name string, id int) string {
	if name == "" {
		return fmt.Sprintf("host_id %d", id)
	}
	return fmt.Sprintf("%s (host_id %d)", name, id)
}

// OneLine keeps a message on one line (libvirt shows a hook's error in one).
func OneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
