package cli

import (
	"github.com/spf13/cobra"
)

// addPublish registers the create/run flags kept out of vm.go's shared
// block: name completion for --image and --kernel.
func (f *createFlags) addPublish(a *app, cmd *cobra.Command) {
	_ = cmd.RegisterFlagCompletionFunc("image", a.completeNames("image"))
	_ = cmd.RegisterFlagCompletionFunc("kernel", a.completeNames("kernel"))
}
