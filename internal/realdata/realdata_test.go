package realdata

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// recorder stands for a test: it keeps the message Fatalf or Skipf gave and
// stops the goroutine, as they do.
type recorder struct {
	testing.TB
	fatal, skip string
}

func (r *recorder) Helper() {}
func (r *recorder) Fatal(args ...any) {
	r.fatal = fmt.Sprint(args...)
	runtime.Goexit()
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (r *recorder) Skipf(format string, args ...any) {
	r.skip = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func record(f func(tb testing.TB)) *recorder {
	r := &recorder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r
}

// module makes a module in a temporary directory with the given release
// directories (each with a file a.txt) and works there.
func module(t *testing.T, releases ...string) {
	dir := t.TempDir()
	files := map[string]string{"go.mod": "module x\n", filepath.Join(Dir, "README.md"): "x\n"}
	for _, r := range releases {
		files[filepath.Join(Dir, r, "a.txt")] = "a\n"
	}
	for name, data := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(filepath.Join(dir, Dir))
}

func TestNoReleaseFails(t *testing.T) {
	module(t)
	r := record(func(tb testing.TB) { Releases(tb) })
	if !strings.Contains(r.fatal, "no release directory") {
		t.Errorf("Releases with no release directory: fatal %q, skip %q", r.fatal, r.skip)
	}
}

func TestMissingFile(t *testing.T) {
	module(t, "debian12", "debian13")
	var rs []Release
	if r := record(func(tb testing.TB) { rs = Releases(tb) }); r.fatal != "" || len(rs) != 2 ||
		rs[0].Name != "debian12" || rs[1].Name != "debian13" {
		t.Fatalf("Releases = %+v (fatal %q), want debian12 and debian13", rs, r.fatal)
	}
	d12, d13 := rs[0], rs[1]
	var data []byte
	if r := record(func(tb testing.TB) { data = d12.Read(tb, "a.txt") }); r.fatal != "" || string(data) != "a\n" {
		t.Errorf("Read(a.txt) = %q (fatal %q)", data, r.fatal)
	}
	// Needed by every release: fails.
	if r := record(func(tb testing.TB) { d13.Read(tb, "b.txt") }); !strings.Contains(r.fatal, "debian13: no b.txt") {
		t.Errorf("Read(b.txt): fatal %q, skip %q", r.fatal, r.skip)
	}
	if r := record(func(tb testing.TB) { d12.Glob(tb, "*.json") }); !strings.Contains(r.fatal, "debian12: no *.json") {
		t.Errorf("Glob(*.json): fatal %q, skip %q", r.fatal, r.skip)
	}
	// Optional for debian13 only: skips there, fails for debian12.
	const opt = "sanlock-host-status-dead.txt"
	if !d13.IsOptional(opt) || d12.IsOptional(opt) {
		t.Fatalf("%s: want optional for debian13 only", opt)
	}
	if r := record(func(tb testing.TB) { d13.Read(tb, opt) }); r.fatal != "" || !strings.Contains(r.skip, "optional for debian13") {
		t.Errorf("debian13 Read(%s): fatal %q, skip %q", opt, r.fatal, r.skip)
	}
	if r := record(func(tb testing.TB) { d12.Read(tb, opt) }); !strings.Contains(r.fatal, "debian12: no "+opt) {
		t.Errorf("debian12 Read(%s): fatal %q, skip %q", opt, r.fatal, r.skip)
	}
}
