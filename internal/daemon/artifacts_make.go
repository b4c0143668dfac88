package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/debarchive"
	"github.com/bangerdev/banger/internal/faultinject"
	"github.com/bangerdev/banger/internal/imagecat"
	"github.com/bangerdev/banger/internal/imagepull"
	"github.com/bangerdev/banger/internal/kernelcat"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/progress"
	"github.com/bangerdev/banger/internal/rpc"
)

func (d *Daemon) artifactMakeMethods(m *rpc.Methods) {
	rpc.Register(m, api.MethodKernelPull, d.kernelPull)
	rpc.Register(m, api.MethodKernelImport, d.kernelImport)
	rpc.Register(m, api.MethodImageBuild, d.imageBuild)
	rpc.Register(m, api.MethodImageImport, d.imageImport)
	rpc.Register(m, api.MethodImagePull, d.imagePull)
}

// kernelStore opens the on-disk kernel store; a Debian archive is made per
// pull (its indices are large and only needed then).
func (d *Daemon) kernelStore(withArchive bool, report progress.Func) (*kernelcat.Store, error) {
	cfg := kernelcat.StoreConfig{Dir: d.paths.KernelsDir(), Logger: d.log}
	if withArchive {
		src, err := debarchive.ReadHostSources("/")
		if err != nil {
			return nil, fmt.Errorf("read the host's apt sources: %w", err)
		}
		arch, err := debarchive.New(debarchive.Config{Sources: src, CacheDir: d.paths.DownloadsDir(), Logger: d.log})
		if err != nil {
			return nil, err
		}
		cfg.Archive = arch
	}
	return kernelcat.NewStore(cfg)
}

func (d *Daemon) kernelPull(ctx context.Context, c *rpc.Call, p api.KernelPull) (model.Kernel, error) {
	ks, err := d.kernelStore(true, c.ProgressFunc())
	if err != nil {
		return model.Kernel{}, err
	}
	if p.Name == "" {
		p.Name = ks.Catalog().Default().Name
	}
	c.SetTarget(p.Name)
	k, err := ks.Pull(ctx, p.Name, c.ProgressFunc())
	if err != nil {
		return model.Kernel{}, d.noSpace(fmt.Errorf("pull kernel %q: %w", p.Name, err), "pulling kernel "+p.Name)
	}
	faultinject.Pause(ctx, faultinject.Point("kernel-pull", "record"))
	return d.recordKernel(ctx, k)
}

func (d *Daemon) kernelImport(ctx context.Context, c *rpc.Call, p api.KernelImport) (model.Kernel, error) {
	c.SetTarget(p.Name)
	if err := model.ValidateArtifactName(p.Name); err != nil {
		return model.Kernel{}, api.Errorf(api.CodeInvalidArgument, "%v", err)
	}
	ks, err := d.kernelStore(false, nil)
	if err != nil {
		return model.Kernel{}, err
	}
	k, err := ks.Import(ctx, p.Name, p.Path, p.Modules)
	if err != nil {
		return model.Kernel{}, fmt.Errorf("import kernel %q from %s: %w", p.Name, p.Path, err)
	}
	return d.recordKernel(ctx, k)
}

func (d *Daemon) recordKernel(ctx context.Context, k kernelcat.Kernel) (model.Kernel, error) {
	return d.store.PutKernel(ctx, model.Kernel{
		Name: k.Name, Release: k.Release, Source: k.Source, SHA256: k.SHA256, Path: k.Path,
		VMLinux: k.VMLinux, ModulesDir: k.ModulesDir, VMMs: k.VMMs, CreatedAt: k.CreatedAt,
	})
}

func (d *Daemon) imageStore() imagecat.Store { return imagecat.Store{Dir: d.paths.ImagesDir()} }

// imageBuild runs a catalog build. debootstrap needs root: a root daemon
// (development on a root machine) builds in-process, as it needs no helper
// for it; an unprivileged daemon has the root helper build into this
// daemon's store (the helper finds the store from the BANGER_HOME/XDG
// environment it shares with the daemon, and hands the rootfs to the owner),
// then records the result here.
func (d *Daemon) imageBuild(ctx context.Context, c *rpc.Call, p api.ImageBuild) (model.Image, error) {
	c.SetTarget(p.Name)
	cat, err := imagecat.Load()
	if err != nil {
		return model.Image{}, err
	}
	e, err := cat.Lookup(p.Name)
	if err != nil {
		return model.Image{}, api.Errorf(api.CodeNotFound, "%v (catalog images: %s)", err, catalogNames(cat))
	}
	if e.Kind != imagecat.KindDebootstrap {
		return model.Image{}, api.Errorf(api.CodeInvalidArgument, "image %q is a registry image: use banger image pull %s", e.Name, e.Name)
	}
	st := d.imageStore()
	out, done, err := d.prepareImage(st, e.Name)
	if err != nil {
		return model.Image{}, err
	}
	defer func() { done(err) }()
	if os.Geteuid() == 0 {
		var res imagecat.Result
		res, err = imagecat.BuildDebootstrap(ctx, e, imagecat.BuildOptions{Out: out, WorkDir: d.paths.Cache, Logger: c.Log, Progress: c.ProgressFunc()})
		if err != nil {
			return model.Image{}, fmt.Errorf("build image %q: %w", e.Name, err)
		}
		var img model.Image
		img, err = d.recordImage(ctx, "image-build", st, res)
		return img, err
	}
	built, err := d.helper.BuildImage(ctx, e.Name, c.ProgressFunc())
	if err != nil {
		// The helper's typed errors keep their code through %w.
		return model.Image{}, fmt.Errorf("build image %q through the root helper (debootstrap needs root): %w", e.Name, err)
	}
	if want, _ := filepath.Abs(out); built.Path != want {
		err = api.Errorf(api.CodeFailedPrecondition, "build image %q: the root helper wrote %s, not this daemon's %s: the helper and the daemon disagree on BANGER_HOME", e.Name, built.Path, want)
		return model.Image{}, err
	}
	// err is what the deferred undo sees: a failed record removes the image.
	img, err := d.recordImage(ctx, "image-build", st, imagecat.Result{
		Name: built.Name, Source: built.Source, Digest: built.Digest,
		SizeBytes: built.SizeBytes, Path: built.Path, CreatedAt: built.CreatedAt,
	})
	return img, err
}

func (d *Daemon) imageImport(ctx context.Context, c *rpc.Call, p api.ImageImport) (model.Image, error) {
	c.SetTarget(p.Name)
	if err := imagecat.ValidateName(p.Name); err != nil {
		return model.Image{}, api.Errorf(api.CodeInvalidArgument, "%v", err)
	}
	st := d.imageStore()
	out, done, err := d.prepareImage(st, p.Name)
	if err != nil {
		return model.Image{}, err
	}
	defer func() { done(err) }()
	res, err := imagecat.Import(ctx, p.Name, p.Path, out, imagecat.ImportOptions{WorkDir: d.paths.Cache, Logger: c.Log, Progress: c.ProgressFunc()})
	if err != nil {
		err = d.noSpace(fmt.Errorf("import image %q from %s: %w", p.Name, p.Path, err), "importing image "+p.Name)
		return model.Image{}, err
	}
	img, err := d.recordImage(ctx, "image-import", st, res)
	return img, err
}

func (d *Daemon) imagePull(ctx context.Context, c *rpc.Call, p api.ImagePull) (model.Image, error) {
	if p.Ref == "" {
		return model.Image{}, api.Errorf(api.CodeInvalidArgument, "image pull: no reference given (e.g. docker.io/library/alpine:3.20)")
	}
	if p.Name == "" {
		p.Name = nameFromRef(p.Ref)
	}
	c.SetTarget(p.Name)
	if err := imagecat.ValidateName(p.Name); err != nil {
		return model.Image{}, api.Errorf(api.CodeInvalidArgument, "%v: choose one with --name", err)
	}
	st := d.imageStore()
	out, done, err := d.prepareImage(st, p.Name)
	if err != nil {
		return model.Image{}, err
	}
	defer func() { done(err) }()
	res, err := imagepull.Pull(ctx, p.Ref, out, imagepull.Options{
		LayersDir: d.paths.LayersDir(), WorkDir: d.paths.Cache, Platform: p.Platform,
		Insecure: p.Insecure, Progress: c.ProgressFunc(), Logger: c.Log,
	})
	if err != nil {
		err = d.noSpace(fmt.Errorf("pull image %s: %w", p.Ref, err), "pulling image "+p.Ref)
		return model.Image{}, err
	}
	faultinject.Pause(ctx, faultinject.Point("image-pull", "image"))
	img, err := d.recordImage(ctx, "image-pull", st, imagecat.Result{
		Name: p.Name, Source: "oci:" + res.Ref + "@" + res.Digest, Digest: "sha256:" + strings.TrimPrefix(res.ImageDigest, "sha256:"),
		SizeBytes: res.SizeBytes, Path: res.Path, CreatedAt: time.Now().UTC(),
	})
	return img, d.noSpace(err, "recording image "+p.Name)
}

// prepareImage makes the image's directory; the returned undo removes it
// when the build fails and the directory is new, so nothing is left behind.
func (d *Daemon) prepareImage(st imagecat.Store, name string) (string, func(error), error) {
	out, created, err := st.Prepare(name)
	if err != nil {
		return "", nil, api.Errorf(api.CodeInvalidArgument, "%v", err)
	}
	return out, func(err error) {
		if err != nil && created {
			_ = os.RemoveAll(filepath.Dir(out))
		}
	}, nil
}

// recordImage writes image.json, then the store row; kind names the
// operation for fault injection (KIND/record pauses between the two).
func (d *Daemon) recordImage(ctx context.Context, kind string, st imagecat.Store, res imagecat.Result) (model.Image, error) {
	if err := st.Save(res); err != nil {
		return model.Image{}, err
	}
	faultinject.Pause(ctx, faultinject.Point(kind, "record"))
	return d.store.PutImage(ctx, model.Image{
		Name: res.Name, Source: res.Source, Digest: strings.TrimPrefix(res.Digest, "sha256:"),
		SizeBytes: res.SizeBytes, Path: res.Path, CreatedAt: res.CreatedAt,
	})
}

// nameFromRef turns docker.io/library/alpine:3.20 into alpine-3.20.
func nameFromRef(ref string) string {
	r := ref
	if i := strings.Index(r, "@"); i >= 0 {
		r = r[:i]
	}
	if i := strings.LastIndex(r, "/"); i >= 0 {
		r = r[i+1:]
	}
	return strings.NewReplacer(":", "-").Replace(r)
}

func catalogNames(c *imagecat.Catalog) string {
	var names []string
	for _, e := range c.Images {
		names = append(names, e.Name)
	}
	return strings.Join(names, ", ")
}
