package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/store"
)

func (d *Daemon) artifactMethods(m *rpc.Methods) {
	rpc.Register(m, api.MethodKernelList, d.kernelList)
	rpc.Register(m, api.MethodKernelGet, d.kernelGet)
	rpc.Register(m, api.MethodKernelRemove, d.kernelRemove)
	rpc.Register(m, api.MethodImageList, d.imageList)
	rpc.Register(m, api.MethodImageGet, d.imageGet)
	rpc.Register(m, api.MethodImageRemove, d.imageRemove)
}

func (d *Daemon) kernelList(ctx context.Context, c *rpc.Call, _ api.Empty) (api.KernelList, error) {
	ks, err := d.store.ListKernels(ctx)
	if ks == nil {
		ks = []model.Kernel{}
	}
	return api.KernelList{Kernels: ks}, err
}

func (d *Daemon) kernelGet(ctx context.Context, c *rpc.Call, p api.ArtifactRef) (model.Kernel, error) {
	k, err := d.store.GetKernel(ctx, p.Name)
	if errors.Is(err, store.ErrNotFound) {
		return model.Kernel{}, api.Errorf(api.CodeNotFound, "kernel %q not found (banger kernel ls lists kernels; banger kernel pull fetches the default)", p.Name)
	}
	return k, err
}

func (d *Daemon) kernelRemove(ctx context.Context, c *rpc.Call, p api.ArtifactRef) (api.Empty, error) {
	c.SetTarget(p.Name)
	k, err := d.store.GetKernel(ctx, p.Name)
	if errors.Is(err, store.ErrNotFound) {
		return api.Empty{}, api.Errorf(api.CodeNotFound, "kernel %q not found (banger kernel ls lists kernels)", p.Name)
	} else if err != nil {
		return api.Empty{}, err
	}
	// A VM needs its kernel at every start, so there is no --force here.
	if users, err := d.store.KernelInUse(ctx, k.Name); err != nil {
		return api.Empty{}, err
	} else if len(users) > 0 {
		return api.Empty{}, api.Errorf(api.CodeFailedPrecondition, "kernel %q is used by vms %v: remove them first (banger vm rm -f %s)", k.Name, users, strings.Join(users, " "))
	}
	if err := d.store.DeleteKernel(ctx, k.Name); err != nil {
		return api.Empty{}, fmt.Errorf("remove kernel %q: %w", k.Name, err)
	}
	return api.Empty{}, removeArtifactDir(d.paths.KernelsDir(), k.Name)
}

func (d *Daemon) imageList(ctx context.Context, c *rpc.Call, _ api.Empty) (api.ImageList, error) {
	imgs, err := d.store.ListImages(ctx)
	if imgs == nil {
		imgs = []model.Image{}
	}
	return api.ImageList{Images: imgs}, err
}

func (d *Daemon) imageGet(ctx context.Context, c *rpc.Call, p api.ArtifactRef) (model.Image, error) {
	img, err := d.store.GetImage(ctx, p.Name)
	if errors.Is(err, store.ErrNotFound) {
		return model.Image{}, api.Errorf(api.CodeNotFound, "image %q not found (banger image ls lists images; banger image build debian-bookworm makes the default)", p.Name)
	}
	return img, err
}

func (d *Daemon) imageRemove(ctx context.Context, c *rpc.Call, p api.ArtifactRef) (api.Empty, error) {
	c.SetTarget(p.Name)
	img, err := d.store.GetImage(ctx, p.Name)
	if errors.Is(err, store.ErrNotFound) {
		return api.Empty{}, api.Errorf(api.CodeNotFound, "image %q not found (banger image ls lists images)", p.Name)
	} else if err != nil {
		return api.Empty{}, err
	}
	if users, err := d.store.ImageInUse(ctx, img.Name); err != nil {
		return api.Empty{}, err
	} else if len(users) > 0 && !p.Force {
		return api.Empty{}, api.Errorf(api.CodeFailedPrecondition, "image %q is used by vms %v: remove them first (banger vm rm -f %s), or use banger image rm --force %s (their disks are copies and keep working)", img.Name, users, strings.Join(users, " "), img.Name)
	}
	del := d.store.DeleteImage
	if p.Force {
		del = d.store.DeleteImageInUse
	}
	if err := del(ctx, img.Name); err != nil {
		return api.Empty{}, fmt.Errorf("remove image %q: %w", img.Name, err)
	}
	return api.Empty{}, removeArtifactDir(d.paths.ImagesDir(), img.Name)
}

// removeArtifactDir deletes <root>/<name>, refusing names that would step
// outside root.
func removeArtifactDir(root, name string) error {
	if err := model.ValidateArtifactName(name); err != nil {
		return api.Errorf(api.CodeInvalidArgument, "%v", err)
	}
	dir := filepath.Join(root, name)
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
}
