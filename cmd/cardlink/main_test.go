package main

import (
	"os"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"cardlink/internal/cli"
)

// TestMain makes the test binary double as the cardlink command inside
// testscript scripts.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"cardlink": func() { os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) },
	})
}

// TestScripts runs the CLI scenarios in testdata/*.txtar: each is a
// sequence of cardlink invocations with their expected output and exit codes.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata",
		RequireExplicitExec: true,
	})
}
