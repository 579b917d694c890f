// Package realdata gives the tests the outputs captured from real test
// clusters: testdata/real/<release>/ (debian12, debian13, ...), all with the
// same file names, written by testdata/harness/capture.sh. A test over them
// runs once per release directory, as a subtest named by the release (Run).
//
// Every file a test reads must be in every release directory: a missing one
// fails the test, unless Optional lists it for that release.
package realdata

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// Dir is where the release directories are, relative to the module root.
const Dir = "testdata/real"

// Optional lists, per release, the files its directory may lack: a test that
// needs one skips for that release, saying so. This is the only such list;
// any other file a test reads missing from a release directory fails it.
var Optional = map[string][]string{
	// Taken by hand on Debian 13 (host1, vg0 started, no LV active) while
	// kill-vg was built; capture.sh does not take them yet.
	"debian12": {
		"lvmlockctl-info-dump.txt",
		"dmsetup-info.txt",
		"dmsetup-table.txt",
	},
	// Taken by hand during the harness's host_crash scenario, not by
	// capture.sh: they exist for debian12 only until someone takes them.
	"debian13": {
		"sanlock-host-status-failing.txt",
		"sanlock-host-status-dead.txt",
		"sanlock-direct-dump-crashed.txt",
		"lvs-lockargs-crashed.txt",
	},
}

// Release is one release directory, such as testdata/real/debian12.
type Release struct {
	Name string // the directory's name: debian12
	Dir  string // its path, usable from the test's working directory
}

// Releases returns the release directories (testdata/real/debian*/), in
// name order. None fails t.
func Releases(t testing.TB) []Release {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dirs, err := filepath.Glob(filepath.Join(root, Dir, "debian*"))
	if err != nil {
		t.Fatal(err)
	}
	var rs []Release
	for _, d := range dirs {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			rs = append(rs, Release{Name: filepath.Base(d), Dir: d})
		}
	}
	if len(rs) == 0 {
		t.Fatalf("no release directory %s/debian*/ in %s: the captured outputs are missing", Dir, root)
	}
	return rs
}

// Run runs f as a subtest named by the release (t.Run("debian12", ...)),
// for every release directory.
func Run(t *testing.T, f func(t *testing.T, r Release)) {
	t.Helper()
	for _, r := range Releases(t) {
		t.Run(r.Name, func(t *testing.T) { f(t, r) })
	}
}

// Path is the path of name (slash-separated, relative to the release
// directory), whether or not it exists.
func (r Release) Path(name string) string {
	return filepath.Join(r.Dir, filepath.FromSlash(name))
}

// Read returns the file name of the release. A missing file fails t, or
// skips it when Optional lists the file for this release.
func (r Release) Read(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(r.Path(name))
	if errors.Is(err, fs.ErrNotExist) {
		r.missing(t, name)
	}
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// Glob returns the files of the release matching pattern (slash-separated,
// relative to the release directory). No match fails t, as a missing file.
func (r Release) Glob(t testing.TB, pattern string) []string {
	t.Helper()
	m, err := filepath.Glob(r.Path(pattern))
	if err != nil {
		t.Fatal(err)
	}
	if len(m) == 0 {
		r.missing(t, pattern)
	}
	return m
}

// IsOptional says whether Optional lists name for this release.
func (r Release) IsOptional(name string) bool {
	return slices.Contains(Optional[r.Name], name)
}

func (r Release) missing(t testing.TB, name string) {
	t.Helper()
	if r.IsOptional(name) {
		t.Skipf("%s/%s: no %s (optional for %s: realdata.Optional)", Dir, r.Name, name, r.Name)
	}
	t.Fatalf("%s/%s: no %s: every release directory needs it (capture it with testdata/harness/capture.sh, "+
		"or list it for %s in realdata.Optional)", Dir, r.Name, name, r.Name)
}

// moduleRoot is the nearest directory up from the working directory (the
// test's package) holding go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}
