// Command cardlink is the one binary of the cardlink system: the virtual
// smart card and its issuer tools today, and the server, device and links as
// they land. Run "cardlink -h" for the list of subcommands.
package main

import (
	"os"

	"cardlink/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
