// Command banger is the developer-facing CLI of banger.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/bangerdev/banger/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Execute(ctx, cli.DefaultEnv(), os.Args[1:])
	stop()
	os.Exit(code)
}
