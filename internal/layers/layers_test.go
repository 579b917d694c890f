// Package layers checks the project's package graph: which of its packages
// each one may import, that the hook never links go-libvirt, and that only
// lvmlock runs commands. It reads import lists with go/build; nothing is
// compiled.
package layers

import (
	"go/build"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/lvhook/lvhook/"

// allowed lists, for each package of the module (by directory), the
// packages of the module its non-test files may import. A package missing
// here fails the test: a new package states its place in the graph.
var allowed = map[string][]string{
	"lvmlock":           {"internal/clock"},
	"lvmlock/lvmfake":   {"lvmlock"},
	"config":            {"lvmlock"},
	"domxml":            {"lvmlock"},
	"state":             {"lvmlock"},
	"peer":              {"config", "domxml", "lvmlock", "internal/clock"},
	"peer/peertest":     {"peer"},
	"virt":              {},
	"hook":              {"config", "domxml", "state", "lvmlock", "peer", "internal/clock"},
	"migration":         {"config", "domxml", "state", "lvmlock", "virt", "peer", "internal/clock"},
	"check":             {"config", "domxml", "state", "lvmlock", "virt", "peer"},
	"evacuate":          {"config", "domxml", "state", "lvmlock", "virt", "peer", "internal/clock"},
	"killvg":            {"config", "domxml", "state", "lvmlock", "virt"},
	"internal/realdata": {},
	"internal/testutil": {},
	"internal/clock":    {},
	"virt/virttest":     {"virt"},
	"internal/layers":   {},
	"cmd/lvhook":        {"config", "domxml", "state", "lvmlock", "virt", "peer", "hook", "migration", "check", "evacuate", "killvg"},
}

// apart lists packages that must not reach each other, even through others.
var apart = []string{"hook", "migration", "check", "evacuate", "killvg"}

// testsJoining lists the one place where tests join them: the model test
// (migration/sim_test.go) runs the real hook beside the real lock helper on
// simulated hosts, the real evacuation on one of them
// (migration/sim_evacuate_test.go), and the real kill-vg when one loses its
// lease storage (migration/simloss_test.go).
var testsJoining = map[string][]string{"migration": {"hook", "evacuate", "killvg"}}

// runsCommands is the only package that may import os/exec (lvmfake, the
// test double of lvm's commands, runs none but builds exec errors).
var runsCommands = []string{"lvmlock", "lvmlock/lvmfake"}

type pkg struct {
	imports     []string // the module's packages, by directory
	external    []string // everything else
	testImports []string // the module's packages imported by tests
}

func readGraph(t *testing.T) map[string]pkg {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	graph := map[string]pkg{}
	err = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		name := d.Name()
		if path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "docs" || name == "packaging") {
			return filepath.SkipDir
		}
		bp, err := build.ImportDir(path, 0)
		if err != nil {
			if _, ok := err.(*build.NoGoError); ok {
				return nil
			}
			return err
		}
		rel, _ := filepath.Rel(root, path)
		var p pkg
		for _, imp := range bp.Imports {
			if dir, ok := strings.CutPrefix(imp, module); ok {
				p.imports = append(p.imports, dir)
			} else {
				p.external = append(p.external, imp)
			}
		}
		for _, imp := range append(bp.TestImports, bp.XTestImports...) {
			if dir, ok := strings.CutPrefix(imp, module); ok && dir != rel {
				p.testImports = append(p.testImports, dir)
			}
		}
		graph[filepath.ToSlash(rel)] = p
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return graph
}

// deps is every package of the module that dir reaches through non-test imports.
func deps(graph map[string]pkg, dir string) []string {
	var out []string
	var walk func(string)
	walk = func(d string) {
		for _, imp := range graph[d].imports {
			if !slices.Contains(out, imp) {
				out = append(out, imp)
				walk(imp)
			}
		}
	}
	walk(dir)
	slices.Sort(out)
	return out
}

func TestImportsFollowTheLayers(t *testing.T) {
	graph := readGraph(t)
	if len(graph) < 5 {
		t.Fatalf("found %d packages; is the test run from internal/layers?", len(graph))
	}
	for dir, p := range graph {
		ok, known := allowed[dir]
		if !known {
			t.Errorf("package %s has no place in the layers table", dir)
			continue
		}
		for _, imp := range p.imports {
			if !slices.Contains(ok, imp) {
				t.Errorf("%s imports %s; allowed: %v", dir, imp, ok)
			}
		}
	}
	for dir := range allowed {
		if _, ok := graph[dir]; !ok {
			t.Errorf("layers table names %s, which holds no Go package", dir)
		}
	}
}

func TestRoomsStayApart(t *testing.T) {
	graph := readGraph(t)
	for _, a := range apart {
		for _, b := range apart {
			if a != b && slices.Contains(deps(graph, a), b) {
				t.Errorf("%s reaches %s; they are siblings and must not import each other", a, b)
			}
		}
	}
}

func TestRoomsTestApart(t *testing.T) {
	graph := readGraph(t)
	for _, a := range apart {
		for _, imp := range graph[a].testImports {
			if slices.Contains(apart, imp) && imp != a && !slices.Contains(testsJoining[a], imp) {
				t.Errorf("tests of %s import %s", a, imp)
			}
		}
	}
}

func TestHookNeverLinksLibvirt(t *testing.T) {
	graph := readGraph(t)
	for _, d := range append(deps(graph, "hook"), "hook") {
		for _, ext := range graph[d].external {
			if strings.HasPrefix(ext, "github.com/digitalocean/go-libvirt") {
				t.Errorf("hook reaches %s through %s: the hook must never call libvirtd", ext, d)
			}
		}
	}
}

func TestOnlyLvmlockRunsCommands(t *testing.T) {
	graph := readGraph(t)
	for dir, p := range graph {
		if slices.Contains(p.external, "os/exec") && !slices.Contains(runsCommands, dir) {
			t.Errorf("%s imports os/exec; only lvmlock runs commands", dir)
		}
	}
}
