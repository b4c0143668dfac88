package testutil

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// APIMethod is one method descriptor declared in internal/api, as written
// in its source.
type APIMethod struct {
	Var     string // MethodVMCreate
	Name    string // vm.create
	Tracked bool
	// Helper: the root helper's (declared as MethodHelper…); the others
	// are the owner daemon's.
	Helper bool
}

// APIMethods lists every api.Method descriptor declared in internal/api,
// read from its source: a descriptor added there is in the list without
// anyone keeping a second one by hand, so registration tests can check
// that each is served.
func APIMethods(t testing.TB) []APIMethod {
	t.Helper()
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("locate testutil's source")
	}
	dir := filepath.Join(filepath.Dir(self), "..", "api")
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("list internal/api sources in %s: %v", dir, err)
	}
	var out []APIMethod
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatalf("parse %s: %v", f, err)
		}
		for _, decl := range af.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.VAR {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, v := range vs.Values {
					if m, ok := descriptor(t, vs.Names[i].Name, v); ok {
						out = append(out, m)
					}
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b APIMethod) int { return strings.Compare(a.Var, b.Var) })
	return out
}

// descriptor reads `Method[Req, Resp]{Name: "…", Tracked: true}`.
func descriptor(t testing.TB, name string, v ast.Expr) (APIMethod, bool) {
	lit, ok := v.(*ast.CompositeLit)
	if !ok {
		return APIMethod{}, false
	}
	idx, ok := lit.Type.(*ast.IndexListExpr)
	if !ok {
		return APIMethod{}, false
	}
	if id, ok := idx.X.(*ast.Ident); !ok || id.Name != "Method" {
		return APIMethod{}, false
	}
	m := APIMethod{Var: name, Helper: strings.HasPrefix(name, "MethodHelper")}
	for _, el := range lit.Elts {
		kv, ok := el.(*ast.KeyValueExpr)
		if !ok {
			t.Fatalf("descriptor %s: use keyed fields (Name:, Tracked:)", name)
		}
		key := kv.Key.(*ast.Ident).Name
		switch key {
		case "Name":
			bl, ok := kv.Value.(*ast.BasicLit)
			if !ok || bl.Kind != token.STRING {
				t.Fatalf("descriptor %s: Name must be a string literal", name)
			}
			s, err := strconv.Unquote(bl.Value)
			if err != nil {
				t.Fatalf("descriptor %s: %v", name, err)
			}
			m.Name = s
		case "Tracked":
			id, ok := kv.Value.(*ast.Ident)
			if !ok || (id.Name != "true" && id.Name != "false") {
				t.Fatalf("descriptor %s: Tracked must be true or false", name)
			}
			m.Tracked = id.Name == "true"
		}
	}
	if m.Name == "" {
		t.Fatalf("descriptor %s has no name", name)
	}
	return m, true
}
