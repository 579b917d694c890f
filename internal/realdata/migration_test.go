package realdata

import (
	"strings"
	"testing"
)

// releaseReason is the last argument libvirt gives `release end` on the source
// of a live migration and on the destination's destroy afterwards: libvirt
// 11.3 (Debian 13) passes the shutoff reason, 9.0 (Debian 12) passes "-"
// (testdata/real/README.md).
var releaseReason = map[string]struct{ migrated, destroyed string }{
	"debian12": {migrated: "-", destroyed: "-"},
	"debian13": {migrated: "migrated", destroyed: "destroyed"},
}

// TestMigrationHookCalls reads capture.sh's start of t1 on host1 and its live
// migration to host2 ("TIME HOST DOMAIN OP SUBOP EXTRA" lines, by time): the
// destination's migrate begin comes before its prepare, the source's release
// end after the destination's started, and release end carries the reason.
func TestMigrationHookCalls(t *testing.T) {
	Run(t, func(t *testing.T, r Release) {
		want, ok := releaseReason[r.Name]
		if !ok {
			t.Fatalf("no release end reasons for %s: add them to releaseReason", r.Name)
		}
		var calls []string
		reason := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(string(r.Read(t, "hook-calls-migration.txt"))), "\n") {
			f := strings.Fields(line)
			if len(f) != 6 || f[2] != "t1" {
				t.Fatalf("hook-calls-migration.txt: line %q, want TIME HOST t1 OP SUBOP EXTRA", line)
			}
			call := f[1] + " " + f[3] + " " + f[4]
			calls = append(calls, call)
			if f[3] == "release" {
				reason[f[1]] = f[5]
			}
		}
		index := func(call string) int {
			for i, c := range calls {
				if c == call {
					return i
				}
			}
			t.Fatalf("hook-calls-migration.txt: no %q in %q", call, calls)
			return -1
		}
		if index("host2 migrate begin") > index("host2 prepare begin") {
			t.Errorf("the destination's prepare came before its migrate begin: %q", calls)
		}
		if index("host1 release end") < index("host2 started begin") {
			t.Errorf("the source released t1 before the destination started it: %q", calls)
		}
		if reason["host1"] != want.migrated || reason["host2"] != want.destroyed {
			t.Errorf("release end's last argument: source %q, destination %q; want %q and %q",
				reason["host1"], reason["host2"], want.migrated, want.destroyed)
		}
	})
}
