package realdata

import (
	"bufio"
	"bytes"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// versions is what the guests of each release run (testdata/real/README.md).
// A release directory's versions.txt and lvm-errors headers must show them,
// so that no capture sits in another release's directory.
var versions = map[string]struct{ lvm, sanlock, libvirt string }{
	"debian12": {lvm: "2.03.16", sanlock: "3.8.5", libvirt: "9.0"},
	"debian13": {lvm: "2.03.31", sanlock: "3.9.5", libvirt: "11.3"},
}

func TestRealVersions(t *testing.T) {
	Run(t, func(t *testing.T, r Release) {
		want, ok := versions[r.Name]
		if !ok {
			t.Fatalf("no versions for %s in the versions table: add the release's lvm2, sanlock and libvirt versions", r.Name)
		}
		debian := strings.TrimPrefix(r.Name, "debian")
		t.Run("lvm-errors", func(t *testing.T) {
			// "# host1, lvm2 2.03.16 (Debian 12), LC_ALL=C" in older captures, then
			// "# HOST, LVM version: V(2) (DATE), Debian N.N, LC_ALL=C".
			lvm := regexp.MustCompile(`\b` + regexp.QuoteMeta(want.lvm) + `\b`)
			deb := regexp.MustCompile(`\bDebian ` + debian + `\b`)
			for _, f := range r.Glob(t, "lvm-errors/*.cmd") {
				name, _ := filepath.Rel(r.Dir, f)
				head, _, _ := strings.Cut(string(r.Read(t, filepath.ToSlash(name))), "\n")
				if !lvm.MatchString(head) || !deb.MatchString(head) {
					t.Errorf("%s: header %q, want lvm2 %s on Debian %s", name, head, want.lvm, debian)
				}
			}
		})
		t.Run("versions.txt", func(t *testing.T) {
			for _, err := range checkVersions(r.Read(t, "versions.txt"), debian, want.lvm, want.sanlock, want.libvirt) {
				t.Error(err)
			}
		})
	})
}

// checkVersions checks capture.sh's versions.txt ("# COMMAND" lines, each
// followed by the command's output) against a release's versions.
func checkVersions(data []byte, debian, lvm, sanlock, libvirt string) []error {
	out := map[string][]string{}
	var cmd string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if c, ok := strings.CutPrefix(sc.Text(), "# "); ok {
			cmd = c
			out[cmd] = []string{}
		} else if cmd != "" && strings.TrimSpace(sc.Text()) != "" {
			out[cmd] = append(out[cmd], strings.Fields(sc.Text())...)
		}
	}
	// after returns the word following the words of prefix in cmd's output.
	after := func(cmd string, prefix ...string) string {
		w := out[cmd]
		for i := 0; i+len(prefix) < len(w); i++ {
			if strings.Join(w[i:i+len(prefix)], " ") == strings.Join(prefix, " ") {
				return w[i+len(prefix)]
			}
		}
		return ""
	}
	// is: v is want, or a later release of it (9.0.0 is a 9.0).
	is := func(v, want string) bool { return v == want || strings.HasPrefix(v, want+".") }
	// `sanlock version` prints the bare version (3.9.5 on Debian 13), some
	// releases "sanlock V".
	sanlockV := after("sanlock version", "sanlock")
	if w := out["sanlock version"]; sanlockV == "" && len(w) > 0 {
		sanlockV = w[0]
	}
	var errs []error
	for _, c := range []struct {
		cmd, got, want string
		ok             bool
	}{
		{"cat /etc/debian_version", after("cat /etc/debian_version"), debian + ".x", is(after("cat /etc/debian_version"), debian)},
		{"lvm version", after("lvm version", "LVM", "version:"), lvm + "(N)", strings.HasPrefix(after("lvm version", "LVM", "version:"), lvm+"(")},
		{"sanlock version", sanlockV, sanlock, is(sanlockV, sanlock)},
		{"virsh version", after("virsh version", "Using", "library:", "libvirt"), libvirt, is(after("virsh version", "Using", "library:", "libvirt"), libvirt)},
		{"libvirtd --version", after("libvirtd --version", "libvirtd", "(libvirt)"), libvirt, is(after("libvirtd --version", "libvirtd", "(libvirt)"), libvirt)},
		{"uname -r", after("uname -r"), "a kernel release", after("uname -r") != ""},
	} {
		if _, found := out[c.cmd]; !found {
			errs = append(errs, fmt.Errorf("versions.txt: no section # %s", c.cmd))
		} else if !c.ok {
			errs = append(errs, fmt.Errorf("versions.txt: %s shows %q, want %s", c.cmd, c.got, c.want))
		}
	}
	return errs
}

// TestCheckVersions runs checkVersions on outputs shaped like Debian 12's
// commands (made up, so that the check itself is tested apart from the captures).
func TestCheckVersions(t *testing.T) {
	const data = `# cat /etc/debian_version
12.11
# lvm version
  LVM version:     2.03.16(2) (2022-05-18)
  Library version: 1.02.185 (2022-05-18)
  Driver version:  4.48.0
# sanlock version
sanlock 3.8.5 (built Jan  1 2023 00:00:00)
# virsh version
Compiled against library: libvirt 9.0.0
Using library: libvirt 9.0.0
Using API: QEMU 9.0.0
Running hypervisor: QEMU 7.2.0

# libvirtd --version
libvirtd (libvirt) 9.0.0
# uname -r
6.1.0-37-amd64
`
	d12 := versions["debian12"]
	if errs := checkVersions([]byte(data), "12", d12.lvm, d12.sanlock, d12.libvirt); len(errs) != 0 {
		t.Errorf("debian12: %v", errs)
	}
	d13 := versions["debian13"]
	if errs := checkVersions([]byte(data), "13", d13.lvm, d13.sanlock, d13.libvirt); len(errs) != 5 {
		t.Errorf("Debian 12's versions as debian13's: %d errors, want 5 (all but uname -r): %v", len(errs), errs)
	}
	cut, _, _ := strings.Cut(data, "# uname -r")
	if errs := checkVersions([]byte(cut), "12", d12.lvm, d12.sanlock, d12.libvirt); len(errs) != 1 ||
		!strings.Contains(errs[0].Error(), "no section # uname -r") {
		t.Errorf("without uname -r: %v", errs)
	}
}
