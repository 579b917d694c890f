// Command vulndb builds a Go vulnerability database that govulncheck reads
// with -db file:///DIR, from the OSV entries of a golang.org/x/vulndb module
// (its data/osv/GO-*.json files), for CI machines that cannot reach
// vuln.go.dev. Not shipped; run by `make vulndb` as
//
//	go run ./.ci/vulndb -src MODDIR/data/osv -modified TIME -out DIR
//
// It writes the v1 layout that golang.org/x/vuln's client reads:
// DIR/index/db.json ({"modified": T}), DIR/index/modules.json (one entry per
// module: its path and the IDs, modification times and latest fixed
// versions of the entries that affect it) and DIR/ID/<ID>.json (the entries
// themselves, unchanged). The module zip carries no git history, so its
// entries' "modified" is the zero time (x/vulndb's own cmd/gendb takes it from
// git); -modified (the vulndb version's commit time) then dates the database.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// entry is the part of an OSV entry the indexes need.
type entry struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Affected []struct {
		Module struct {
			Path string `json:"name"`
		} `json:"package"`
		Ranges []struct {
			Type   string `json:"type"`
			Events []struct {
				Introduced string `json:"introduced,omitempty"`
				Fixed      string `json:"fixed,omitempty"`
			} `json:"events"`
		} `json:"ranges"`
	} `json:"affected"`
}

type moduleVuln struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Fixed    string    `json:"fixed,omitempty"`
}

type moduleMeta struct {
	Path  string       `json:"path"`
	Vulns []moduleVuln `json:"vulns"`
}

func main() {
	src := flag.String("src", "", "directory of OSV entries (GO-*.json), e.g. the vulndb module's data/osv")
	out := flag.String("out", "", "directory to write the database to (replaced)")
	modified := flag.String("modified", "", "RFC 3339 time dating the database when its entries have none")
	flag.Parse()
	if *src == "" || *out == "" {
		flag.Usage()
		os.Exit(2)
	}
	if err := build(*src, *out, *modified); err != nil {
		log.Fatal(err)
	}
}

func build(src, out, modified string) error {
	var dbModified time.Time
	if modified != "" {
		t, err := time.Parse(time.RFC3339, modified)
		if err != nil {
			return fmt.Errorf("-modified: %w", err)
		}
		dbModified = t.UTC()
	}
	files, err := filepath.Glob(filepath.Join(src, "GO-*.json"))
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("no GO-*.json entries in %s", src)
	}
	tmp := out + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(tmp, "ID"), 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(tmp, "index"), 0o755); err != nil {
		return err
	}
	modules := map[string]*moduleMeta{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		var e entry
		if err := json.Unmarshal(b, &e); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		if e.ID+".json" != filepath.Base(f) {
			return fmt.Errorf("%s: entry has id %q", f, e.ID)
		}
		if e.Modified.After(dbModified) {
			dbModified = e.Modified
		}
		// Compact: govulncheck streams these files through a JSON decoder.
		var c bytes.Buffer
		if err := json.Compact(&c, b); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		if err := os.WriteFile(filepath.Join(tmp, "ID", e.ID+".json"), c.Bytes(), 0o644); err != nil {
			return err
		}
		for _, a := range e.Affected {
			m := modules[a.Module.Path]
			if m == nil {
				m = &moduleMeta{Path: a.Module.Path, Vulns: []moduleVuln{}}
				modules[a.Module.Path] = m
			}
			var fixed string
			for _, r := range a.Ranges {
				if r.Type != "SEMVER" {
					continue
				}
				fixed = laterFix(fixed, r.Events)
			}
			m.Vulns = append(m.Vulns, moduleVuln{ID: e.ID, Modified: e.Modified, Fixed: fixed})
		}
	}
	index := make([]*moduleMeta, 0, len(modules))
	for _, m := range modules {
		slices.SortStableFunc(m.Vulns, func(a, b moduleVuln) int { return strings.Compare(a.ID, b.ID) })
		index = append(index, m)
	}
	slices.SortFunc(index, func(a, b *moduleMeta) int { return strings.Compare(a.Path, b.Path) })
	if err := writeJSON(filepath.Join(tmp, "index", "modules.json"), index); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(tmp, "index", "db.json"), struct {
		Modified time.Time `json:"modified"`
	}{dbModified}); err != nil {
		return err
	}
	if err := os.RemoveAll(out); err != nil {
		return err
	}
	if err := os.Rename(tmp, out); err != nil {
		return err
	}
	fmt.Printf("vulndb: %d entries, %d modules, modified %s -> %s\n", len(files), len(index), dbModified.Format(time.RFC3339), out)
	return nil
}

// laterFix is golang.org/x/vuln's NonSupersededFix for one range, folded
// into the fix found so far: the latest fixed version, or "" when the
// vulnerability was introduced again after it (then no version fixes it).
// govulncheck uses it only to skip entries fixed before the version in use;
// "" makes it read the entry and check the ranges themselves.
func laterFix(latest string, events []struct {
	Introduced string `json:"introduced,omitempty"`
	Fixed      string `json:"fixed,omitempty"`
}) string {
	for _, e := range events {
		if e.Fixed != "" && less(latest, e.Fixed) {
			latest = e.Fixed
		}
	}
	for _, e := range events {
		if e.Introduced != "" && e.Introduced != "0" && less(latest, e.Introduced) {
			return ""
		}
	}
	return latest
}

func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// less orders semantic versions without a leading "v" (1.27.0-rc.3,
// 0.0.0-20250721152936-fe86ceb2c3fa); "" is before every version, as in
// x/vuln's semver.Less.
func less(a, b string) bool {
	if a == "" || b == "" {
		return a == "" && b != ""
	}
	return compare(a, b) < 0
}

func compare(a, b string) int {
	a, _, _ = strings.Cut(a, "+")
	b, _, _ = strings.Cut(b, "+")
	ac, apre, _ := strings.Cut(a, "-")
	bc, bpre, _ := strings.Cut(b, "-")
	as, bs := strings.Split(ac, "."), strings.Split(bc, ".")
	for i := range max(len(as), len(bs)) {
		if c := compareNum(at(as, i), at(bs, i)); c != 0 {
			return c
		}
	}
	switch {
	case apre == bpre:
		return 0
	case apre == "":
		return 1
	case bpre == "":
		return -1
	}
	ap, bp := strings.Split(apre, "."), strings.Split(bpre, ".")
	for i := range min(len(ap), len(bp)) {
		x, y := ap[i], bp[i]
		if x == y {
			continue
		}
		xn, xerr := strconv.ParseUint(x, 10, 64)
		yn, yerr := strconv.ParseUint(y, 10, 64)
		switch {
		case xerr == nil && yerr == nil:
			if xn < yn {
				return -1
			}
			return 1
		case xerr == nil:
			return -1
		case yerr == nil:
			return 1
		}
		return strings.Compare(x, y)
	}
	return len(ap) - len(bp)
}

func at(s []string, i int) string {
	if i < len(s) {
		return s[i]
	}
	return "0"
}

func compareNum(x, y string) int {
	x, y = strings.TrimLeft(x, "0"), strings.TrimLeft(y, "0")
	if len(x) != len(y) {
		return len(x) - len(y)
	}
	return strings.Compare(x, y)
}
