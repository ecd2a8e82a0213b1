// Package cli implements cardlink's subcommands: one file per command, each
// with its own flag.FlagSet and help text. It wires concrete pieces (card
// files, readers, issuers) together and holds no domain logic.
//
// Errors follow one rule: one "cardlink: ..." line, optional "hint: ..."
// lines, and a non-zero exit (1 for a failure, 2 for a usage error).
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// env is what every command gets: its streams and a context that ends on
// SIGINT or SIGTERM.
type env struct {
	ctx    context.Context
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

// command is one node of the command tree: a leaf runs, a group has subs.
type command struct {
	name    string
	summary string
	run     func(e *env, args []string) error
	subs    []*command
}

// usageError is a mistake in how a command was called: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// hintError carries extra "hint:" lines for the user.
type hintError struct {
	err   error
	hints []string
}

func (e *hintError) Error() string { return e.err.Error() }
func (e *hintError) Unwrap() error { return e.err }

// withHint adds hints to err; the hints err already carries come first.
func withHint(err error, hints ...string) error {
	var h *hintError
	if errors.As(err, &h) {
		return &hintError{err: err, hints: append(append([]string(nil), h.hints...), hints...)}
	}
	return &hintError{err: err, hints: hints}
}

func root() *command {
	return &command{
		name:    "cardlink",
		summary: "remote card-holder authentication and payment approval with a smart card",
		subs: []*command{
			demoCommand(),
			issuerCommand(),
			cardCommand(),
			deviceCommand(),
			serverCommand(),
			serverKeyCommand(),
			merchantCommand(),
			accountCommand(),
			modemCommand(),
			dtmfCommand(),
			lineCommand(),
			versionCommand(),
		},
	}
}

// Main runs cardlink with args (without the program name) and returns the
// process exit status.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	e := &env{ctx: ctx, stdin: stdin, stdout: stdout, stderr: stderr}
	err := dispatch(e, root(), nil, args)
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintf(stderr, "cardlink: %s\n", oneLine(err.Error()))
	var h *hintError
	if errors.As(err, &h) {
		for _, line := range h.hints {
			fmt.Fprintf(stderr, "hint: %s\n", line)
		}
	}
	var u *usageError
	if errors.As(err, &u) {
		return 2
	}
	return 1
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func dispatch(e *env, c *command, path []string, args []string) error {
	path = append(path, c.name)
	if c.run != nil {
		return c.run(e, args)
	}
	if len(args) == 0 {
		groupHelp(e.stderr, c, path)
		if len(path) == 1 {
			return usagef("missing command")
		}
		return usagef("%s: missing subcommand", strings.Join(path[1:], " "))
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		groupHelp(e.stdout, c, path)
		return flag.ErrHelp
	}
	for _, s := range c.subs {
		if s.name == args[0] {
			return dispatch(e, s, path, args[1:])
		}
	}
	var names []string
	for _, s := range c.subs {
		names = append(names, s.name)
	}
	sort.Strings(names)
	var what string
	if len(path) > 1 {
		what = strings.Join(path[1:], " ") + ": unknown subcommand"
	} else {
		what = "unknown command"
	}
	return withHint(usagef("%s %q", what, args[0]),
		"subcommands are: "+strings.Join(names, ", "),
		"run '"+strings.Join(path, " ")+" -h' for help")
}

func groupHelp(w io.Writer, c *command, path []string) {
	fmt.Fprintf(w, "usage: %s <command> [flags]\n\n", strings.Join(path, " "))
	if len(path) == 1 {
		fmt.Fprintf(w, "%s: %s.\n\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "commands:")
	for _, s := range c.subs {
		fmt.Fprintf(w, "  %-11s %s\n", s.name, s.summary)
	}
	fmt.Fprintf(w, "\nrun '%s <command> -h' for a command's flags.\n", strings.Join(path, " "))
}

// newFlags returns a FlagSet for a leaf command whose -h prints the usage
// line, the command's help text and its flags to stdout.
func newFlags(e *env, name, synopsis, help string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		w := e.stdout
		fmt.Fprintf(w, "usage: %s\n\n%s\n", synopsis, strings.TrimSpace(help))
		var any bool
		fs.VisitAll(func(*flag.Flag) { any = true })
		if any {
			fmt.Fprintln(w, "\nflags:")
			fs.SetOutput(w)
			fs.PrintDefaults()
			fs.SetOutput(io.Discard)
		}
	}
	return fs
}

// parse parses args with fs, turning flag errors into usage errors and -h
// into flag.ErrHelp after printing help.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return flag.ErrHelp // fs.Parse has already printed the help
		}
		return withHint(usagef("%s: %v", shortName(fs), err), "run '"+fs.Name()+" -h' for help")
	}
	return nil
}

// required reports a usage error for the first empty flag value.
func required(fs *flag.FlagSet, names ...string) error {
	for _, n := range names {
		f := fs.Lookup(n)
		if f != nil && f.Value.String() == "" {
			return withHint(usagef("%s: flag -%s is required", shortName(fs), n), "run '"+fs.Name()+" -h' for help")
		}
	}
	return nil
}

// shortName is the command's name without the leading "cardlink ", for
// messages that the "cardlink:" prefix already starts.
func shortName(fs *flag.FlagSet) string {
	return strings.TrimPrefix(fs.Name(), "cardlink ")
}
