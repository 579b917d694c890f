package hook

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/lvhook/lvhook/internal/realdata"
)

// The hook calls libvirtd made on the harness while each test domain was
// started and destroyed, per release: every one is an event of lvhook's
// table, and each domain got one call that activates its LVs, then one that
// deactivates them.
func TestRealHookCalls(t *testing.T) {
	domains := []string{"t1", "t3", "tpool", "tmixed", "tshare1", "toptout"}
	realdata.Run(t, func(t *testing.T, r realdata.Release) {
		actions := map[string][]action{}
		for _, line := range strings.Split(strings.TrimSpace(string(r.Read(t, "hook-calls-start-destroy.txt"))), "\n") {
			// TIME HOST DOMAIN OP SUBOP EXTRA
			f := strings.Fields(line)
			if len(f) < 5 {
				t.Errorf("%q: want a time, a host, a domain, an op and a subop", line)
				continue
			}
			e := event{f[3], f[4]}
			if _, ok := table[e]; !ok {
				t.Errorf("%q: %s %s is not in lvhook's event table", line, e.op, e.subop)
			}
			if a := actionFor(e.op, e.subop); a == doActivate || a == doDeactivate {
				actions[f[2]] = append(actions[f[2]], a)
			}
		}
		for _, d := range domains {
			if got, want := actions[d], []action{doActivate, doDeactivate}; !slices.Equal(got, want) {
				t.Errorf("domain %s: actions %v, want %v", d, got, want)
			}
		}
		if len(actions) != len(domains) {
			t.Errorf("calls for domains %v, want %v", slices.Sorted(maps.Keys(actions)), domains)
		}
	})
}
