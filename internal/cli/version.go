package cli

import (
	"fmt"
	"runtime/debug"
)

func versionCommand() *command {
	c := &command{name: "version", summary: "print the version of this binary"}
	c.run = func(e *env, args []string) error {
		fs := newFlags(e, "cardlink version", "cardlink version", "Prints the module version and the Go version it was built with.")
		if err := parse(fs, args); err != nil {
			return err
		}
		v, goVersion := "(devel)", "unknown"
		if bi, ok := debug.ReadBuildInfo(); ok {
			goVersion = bi.GoVersion
			if bi.Main.Version != "" {
				v = bi.Main.Version
			}
		}
		fmt.Fprintf(e.stdout, "cardlink %s %s\n", v, goVersion)
		return nil
	}
	return c
}
