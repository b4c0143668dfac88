// Command banger is the developer-facing CLI of banger.
package main

import (
	"context"
	"os"

	"github.com/bangerdev/banger/internal/cli"
	"github.com/bangerdev/banger/internal/cmdmain"
)

func main() {
	ctx, stop := cmdmain.SignalContext(context.Background())
	code := cli.Execute(ctx, cli.DefaultEnv(), os.Args[1:])
	stop()
	os.Exit(code)
}
