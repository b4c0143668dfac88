package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/api"
)

func newImagePullCommand(a *app) *cobra.Command {
	var p api.ImagePull
	cmd := &cobra.Command{
		Use:   "pull REF",
		Short: "Pull an OCI/Docker image from a registry and make it a VM image",
		Long: `Pull an image (linux/amd64 unless --platform says otherwise), using
Docker's configured credentials, flatten its layers safely and write an ext4
root image. Layers are cached by digest.`,
		Example: `  banger image pull docker.io/library/debian:bookworm
  banger image pull --name alpine ghcr.io/org/img:tag
  banger image pull --insecure 127.0.0.1:5000/test/img:1`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p.Ref = args[0]
			img, err := callWithProgress(cmd.Context(), a, api.MethodImagePull, p)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "image %s: %s (%s)\n", img.Name, bytesHuman(img.SizeBytes), img.Source)
			return nil
		},
	}
	cmd.Flags().StringVar(&p.Name, "name", "", "image name (default: from the reference, e.g. alpine-3.20)")
	cmd.Flags().StringVar(&p.Platform, "platform", "", "os/arch[/variant] (default linux/amd64)")
	cmd.Flags().BoolVar(&p.Insecure, "insecure", false, "allow a plain-HTTP registry (e.g. one on 127.0.0.1)")
	return cmd
}
