package check

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Every problem code the package can report has one row in ProblemTable:
// every Problem* constant has one, the table has no other and no duplicate,
// and no code is spelled as a string literal where a problem is made (so
// that every code goes through a constant). A code missing from the table
// would come first in every report.
func TestProblemTableCodes(t *testing.T) {
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, ".", func(fi os.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, 0)
	if err != nil {
		t.Fatal(err)
	}
	files := pkgs["check"].Files
	if len(files) == 0 {
		t.Fatal("no source of package check found")
	}
	// Every string constant of the package, and which ones are codes.
	consts := map[string]string{}
	var codes []string
	for _, f := range files {
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.CONST {
				continue
			}
			for _, spec := range g.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if i >= len(vs.Values) {
						continue
					}
					lit, ok := vs.Values[i].(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						continue
					}
					v, _ := strconv.Unquote(lit.Value)
					consts[n.Name] = v
					if regexp.MustCompile(`^Problem[A-Z]`).MatchString(n.Name) {
						codes = append(codes, v)
					}
				}
			}
		}
	}

	var table []string
	for _, k := range ProblemTable {
		if slices.Contains(table, k.Code) {
			t.Errorf("ProblemTable: %s has two rows", k.Code)
		}
		table = append(table, k.Code)
	}
	for _, c := range codes {
		if !slices.Contains(table, c) {
			t.Errorf("problem code %s has no row in ProblemTable (check/problems.go): add one where it ranks", c)
		}
	}
	for _, c := range table {
		if !slices.Contains(codes, c) {
			t.Errorf("ProblemTable's %s is no Problem* constant", c)
		}
	}

	// Where a code is given: Problem{Code: X}, problem(X, ...) (the LV
	// problems in lv) and append(lr.Problems, X). X must be a code
	// constant or a variable holding one, never a literal or another
	// constant.
	checkCode := func(where string, e ast.Expr) {
		pos := fset.Position(e.Pos())
		switch e := e.(type) {
		case *ast.Ident:
			if v, ok := consts[e.Name]; ok && !slices.Contains(table, v) {
				t.Errorf("%s: %s = %q as a problem code: not in ProblemTable", pos, e.Name, v)
			}
		case *ast.BasicLit:
			t.Errorf("%s: problem code %s spelled as a literal in %s: use a Problem* constant with a row in ProblemTable", pos, e.Value, where)
		default:
			t.Errorf("%s: problem code given by an expression in %s: use a Problem* constant or a variable holding one", pos, where)
		}
	}
	found := 0
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CompositeLit:
				if id, ok := n.Type.(*ast.Ident); ok && id.Name == "Problem" {
					for _, el := range n.Elts {
						if kv, ok := el.(*ast.KeyValueExpr); ok && kv.Key.(*ast.Ident).Name == "Code" {
							checkCode("Problem{Code: ...}", kv.Value)
							found++
						}
					}
				}
			case *ast.CallExpr:
				switch fn := n.Fun.(type) {
				case *ast.Ident:
					if fn.Name == "problem" && len(n.Args) > 0 {
						checkCode("problem(...)", n.Args[0])
						found++
					}
					if fn.Name == "append" && len(n.Args) > 1 {
						if sel, ok := n.Args[0].(*ast.SelectorExpr); ok && sel.Sel.Name == "Problems" {
							for _, a := range n.Args[1:] {
								checkCode("append(....Problems, ...)", a)
								found++
							}
						}
					}
				}
			}
			return true
		})
	}
	if found < len(table) {
		t.Errorf("found %d places that give a problem code, fewer than the %d codes: the test no longer sees them", found, len(table))
	}
}

// The table's texts fit where they go: a one-line summary, and Markdown
// table cells.
func TestProblemTableTexts(t *testing.T) {
	for _, k := range ProblemTable {
		if !regexp.MustCompile(`^[a-z][a-z-]*[a-z]$`).MatchString(k.Code) {
			t.Errorf("%q: a code is lower-case words joined by -", k.Code)
		}
		for what, s := range map[string]string{"Summary": k.Summary, "Meaning": k.Meaning, "Action": k.Action} {
			if strings.TrimSpace(s) == "" || strings.ContainsAny(s, "\n\t") || s != strings.TrimSpace(s) {
				t.Errorf("%s: %s %q: want one line of text", k.Code, what, s)
			}
		}
		for what, s := range map[string]string{"Meaning": k.Meaning, "Action": k.Action} {
			if strings.Contains(strings.ReplaceAll(s, `\|`, ""), "|") {
				t.Errorf("%s: %s %q: a | must be written \\| in a Markdown table cell", k.Code, what, s)
			}
		}
	}
}

// problemTableMarkdown renders ProblemTable as the operator guide's table.
func problemTableMarkdown() string {
	var b strings.Builder
	b.WriteString("| problem | meaning | what to do |\n|---|---|---|\n")
	for _, k := range ProblemTable {
		b.WriteString("| `" + k.Code + "` | " + k.Meaning + " | " + k.Action + " |\n")
	}
	return b.String()
}

// The operator guide's table of problems (section 6) is ProblemTable's.
func TestProblemTableGuide(t *testing.T) {
	const path = "../docs/operator-guide.md"
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := problemTableMarkdown()
	head, _, _ := strings.Cut(want, "\n")
	var got strings.Builder
	in := false
	for _, line := range strings.SplitAfter(string(data), "\n") {
		if strings.TrimRight(line, "\n") == head {
			if in || got.Len() > 0 {
				t.Fatalf("%s has two tables headed %q", path, head)
			}
			in = true
		}
		if in && !strings.HasPrefix(line, "|") {
			in = false
		}
		if in {
			got.WriteString(strings.TrimRight(line, "\n") + "\n")
		}
	}
	if got.Len() == 0 {
		t.Fatalf("%s has no table headed %q; it should have:\n\n%s", filepath.Clean(path), head, want)
	}
	if diff := cmp.Diff(want, got.String()); diff != "" {
		t.Errorf("%s: the table of problems differs from ProblemTable (check/problems.go) (-want +got):\n%s\nReplace it with:\n\n%s",
			filepath.Clean(path), diff, want)
	}
}
