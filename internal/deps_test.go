// Package internal_test holds checks that span the module's packages.
package internal_test

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// cardSide are the packages that run on the card. They may import only the
// standard library (without I/O) and these cardlink packages.
var cardSide = []string{"card", "applet"}

var cardAllowed = map[string]bool{
	"cardlink/internal/iso7816":  true,
	"cardlink/internal/card":     true,
	"cardlink/internal/card/nvm": true,
	"cardlink/internal/txn":      true,
	"cardlink/internal/money":    true,
}

// forbidden standard packages: the card has no files, network, processes or
// logs.
var forbidden = []string{"os", "net", "database/sql", "log", "syscall", "os/exec", "io/fs", "path/filepath"}

// TestCardImports walks the card-side packages (excluding nvm's own
// file medium, test files and test helper packages) and checks every import.
func TestCardImports(t *testing.T) {
	checked := 0
	for _, root := range cardSide {
		err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				switch d.Name() {
				case "nvm", "testdata":
					return filepath.SkipDir // nvm owns the file medium; it is checked below
				}
				if strings.HasSuffix(d.Name(), "test") {
					return filepath.SkipDir
				}
				return nil
			}
			if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			checkFile(t, path, true)
			checked++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if checked == 0 {
		t.Fatal("no card-side files found; is the test running in internal/?")
	}
}

// TestNVMImports lets nvm reach files (it owns the file medium) but nothing
// else of the host's: no network, no logs, no other cardlink package.
func TestNVMImports(t *testing.T) {
	files, err := filepath.Glob("card/nvm/*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("no nvm files: %v", err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		checkFile(t, f, false)
	}
}

func checkFile(t *testing.T, path string, noOS bool) {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range f.Imports {
		p, _ := strconv.Unquote(imp.Path.Value)
		if strings.HasPrefix(p, "cardlink/") {
			if !noOS {
				t.Errorf("%s imports %s: nvm must not depend on other cardlink packages", path, p)
			} else if !cardAllowed[p] {
				t.Errorf("%s imports %s: card-side code may import only %v", path, p, keys(cardAllowed))
			}
			continue
		}
		if !strings.Contains(strings.SplitN(p, "/", 2)[0], ".") {
			for _, bad := range forbidden {
				if noOS || (bad != "os" && bad != "io/fs" && bad != "path/filepath" && bad != "syscall") {
					if p == bad || strings.HasPrefix(p, bad+"/") {
						t.Errorf("%s imports %s: card-side code must not do I/O", path, p)
					}
				}
			}
			continue
		}
		t.Errorf("%s imports third-party %s: card-side code uses the standard library only", path, p)
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
