// Command wormgate receives the mail log of MX hosts over syslog and
// drops the clients that worms and abusers use in the gateway's kernel.
package main

import (
	"context"
	"os"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
