package virt

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestReadJobFlags reads the <job> element libvirt (9.0 and 11.3,
// qemuDomainObjPrivateXMLFormatJob) writes into a running domain's status
// file: the only place that tells an offline migration from a live one.
func TestReadJobFlags(t *testing.T) {
	dir := t.TempDir()
	write := func(name, job string) {
		t.Helper()
		data := "<domstatus state='running' reason='booted' pid='4242'>\n  <taint flag='high-privileges'/>\n" +
			"  <monitor path='/var/lib/libvirt/qemu/domain-3-" + name + "/monitor.sock' type='unix'/>\n" + job +
			"  <domain type='qemu' id='3'>\n    <name>" + name + "</name>\n    <job async='nested'/>\n  </domain>\n</domstatus>\n"
		if err := os.WriteFile(filepath.Join(dir, name+".xml"), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("live", "  <job type='none' async='migration out' phase='begin3' flags='0x3' asyncStarted='1764612345678'>\n    <migParams/>\n  </job>\n")
	write("offline", "  <job type='none' async='migration out' phase='begin3' flags='0x408' asyncStarted='1764612345678'/>\n")
	write("idle", "")
	write("bad", "  <job type='none' async='migration out' flags='zz'/>\n")
	for _, tc := range []struct {
		name    string
		want    JobFlags
		offline bool
		err     string
	}{
		{name: "live", want: JobFlags{Async: AsyncMigrationOut, Flags: 0x3, Started: 1764612345678}},
		{name: "offline", want: JobFlags{Async: AsyncMigrationOut, Flags: 0x408, Started: 1764612345678}, offline: true},
		{name: "idle", want: JobFlags{Async: "none"}},
		{name: "bad", err: `job flags "zz"`},
		{name: "missing", err: "no such file"},
		{name: "../etc/passwd", err: "cannot name a status file"},
		{name: "..", err: "cannot name a status file"},
	} {
		got, err := ReadJobFlags(dir, tc.name)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ReadJobFlags(%q) error = %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ReadJobFlags(%q) = %v", tc.name, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" || got.Offline() != tc.offline {
			t.Errorf("ReadJobFlags(%q) mismatch (-want +got):\n%s offline=%v", tc.name, diff, got.Offline())
		}
	}
}
