package cli

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/api"
)

func absPath(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", p, err)
	}
	return abs, nil
}

func newImageCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Root images: build from the catalog, pull from a registry, import, list, remove",
		Example: `  banger image build debian-bookworm
  banger image pull docker.io/library/alpine:3.20
  banger image import myroot ./rootfs.tar
  banger image ls`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE,
	}
	cmd.AddCommand(newImageBuildCommand(a), newImagePullCommand(a), newImageImportCommand(a), newImageLsCommand(a), newImageInspectCommand(a), newImageRmCommand(a))
	return cmd
}

func newImageBuildCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "build NAME",
		Short:   "Build a catalog image locally (debian-bookworm: debootstrap + sshd)",
		Example: `  banger image build debian-bookworm`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			img, err := callWithProgress(cmd.Context(), a, api.MethodImageBuild, api.ImageBuild{Name: args[0]})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "image %s: %s\n", img.Name, bytesHuman(img.SizeBytes))
			return nil
		},
	}
}

func newImageImportCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "import NAME PATH",
		Short: "Import a rootfs directory, a tar, or an ext4 file as an image",
		Example: `  banger image import myroot ./rootfs/
  banger image import myroot ./rootfs.tar.gz
  banger image import myroot ./rootfs.ext4`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := absPath(args[1])
			if err != nil {
				return err
			}
			img, err := callWithProgress(cmd.Context(), a, api.MethodImageImport, api.ImageImport{Name: args[0], Path: path})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "image %s: %s\n", img.Name, bytesHuman(img.SizeBytes))
			return nil
		},
	}
}

func newImageLsCommand(a *app) *cobra.Command {
	var asJSON bool
	var format string
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List images",
		Example: `  banger image ls
  banger image ls --json
  banger image ls --format '{{.Name}} {{.SizeBytes}}'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := call(cmd.Context(), a, api.MethodImageList, api.Empty{})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), res)
			}
			if format != "" {
				t, err := parseFormat(format)
				if err != nil {
					return err
				}
				return printFormatted(cmd.OutOrStdout(), t, res.Images)
			}
			now := time.Now()
			rows := [][]string{}
			for _, img := range res.Images {
				rows = append(rows, []string{img.Name, bytesHuman(img.SizeBytes), img.Source, ago(now, img.CreatedAt)})
			}
			return table(cmd.OutOrStdout(), []string{"NAME", "SIZE", "SOURCE", "AGE"}, rows)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().StringVar(&format, "format", "", formatFlagHelp)
	return cmd
}

func newImageInspectCommand(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:               "inspect NAME",
		ValidArgsFunction: a.completeNames("image"),
		Short:             "Show an image's source, digest, size and file",
		Example:           `  banger image inspect debian-bookworm --json`,
		Args:              cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			img, err := call(cmd.Context(), a, api.MethodImageGet, api.ArtifactRef{Name: args[0]})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), img)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "name:    %s\nsource:  %s\ndigest:  sha256:%s\nsize:    %s\npath:    %s\ncreated: %s\n",
				img.Name, img.Source, img.Digest, bytesHuman(img.SizeBytes), img.Path, img.CreatedAt.Format(time.RFC3339))
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newImageRmCommand(a *app) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:               "rm NAME...",
		ValidArgsFunction: a.completeNames("image"),
		Short:             "Remove images (refused while a VM uses one, unless --force)",
		Example:           `  banger image rm myroot`,
		Args:              cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return eachVM(args, func(n string) error {
				if _, err := call(cmd.Context(), a, api.MethodImageRemove, api.ArtifactRef{Name: n, Force: force}); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "image %s removed\n", n)
				return nil
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "remove even if VMs use it")
	return cmd
}
