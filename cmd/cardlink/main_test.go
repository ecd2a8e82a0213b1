package main

import (
	"os"
	"regexp"
	"testing"
	"time"

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
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"setenvre": setenvre,
			"waitfile": waitfile,
		},
	})
}

// setenvre NAME REGEXP [FILE] sets the environment variable NAME to the
// first submatch of REGEXP (multi-line mode) in FILE, by default the
// standard output of the last command; it fails if REGEXP does not match.
func setenvre(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! setenvre")
	}
	if len(args) != 2 && len(args) != 3 {
		ts.Fatalf("usage: setenvre NAME REGEXP [FILE]")
	}
	re, err := regexp.Compile("(?m)" + args[1])
	ts.Check(err)
	if re.NumSubexp() < 1 {
		ts.Fatalf("setenvre: %q has no submatch", args[1])
	}
	file := "stdout"
	if len(args) == 3 {
		file = args[2]
	}
	m := re.FindStringSubmatch(ts.ReadFile(file))
	if m == nil {
		ts.Fatalf("setenvre: no match for %q in %s", args[1], file)
	}
	ts.Setenv(args[0], m[1])
}

// waitfile FILE waits until FILE exists and is not empty, polling for
// at most 30 seconds (a background command writes it).
func waitfile(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: waitfile FILE")
	}
	path := ts.MkAbs(args[0])
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		if fi, err := os.Stat(path); err == nil && fi.Size() > 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	ts.Fatalf("waitfile: %s still missing or empty after 30 s", args[0])
}
