package daemon

import (
	"context"
	"os"
	"path/filepath"
	"strings"

	"github.com/bangerdev/banger/internal/model"
)

// sweepArtifacts removes what an image pull, image import or kernel pull
// cut short by a crash left on disk. It runs at daemon start, under the
// daemon's lock, so none of these operations can be in flight: every
// staging file or directory is unfinished work, and an image or kernel
// directory without a store row was never recorded (the row is written
// last) or was half removed (the row is deleted first). Either way the
// next pull starts from nothing and succeeds.
//
// Image builds through the root helper are left alone: debootstrap's work
// directory may hold mounts, and the helper cleans its own.
func (d *Daemon) sweepArtifacts(ctx context.Context) {
	images, err := d.store.ListImages(ctx)
	if err != nil {
		d.log.WarnContext(ctx, "sweep unfinished artifacts: list images", "err", err)
		return
	}
	kernels, err := d.store.ListKernels(ctx)
	if err != nil {
		d.log.WarnContext(ctx, "sweep unfinished artifacts: list kernels", "err", err)
		return
	}
	recorded := map[string]bool{}
	for _, img := range images {
		recorded[filepath.Join(d.paths.ImagesDir(), img.Name)] = true
	}
	for _, k := range kernels {
		recorded[filepath.Join(d.paths.KernelsDir(), k.Name)] = true
	}
	remove := func(p, why string) {
		if err := os.RemoveAll(p); err != nil {
			d.log.WarnContext(ctx, "sweep unfinished artifacts: remove", "path", p, "err", err)
			return
		}
		d.log.WarnContext(ctx, "removed what an interrupted operation left", "path", p, "what", why)
	}
	for _, dir := range []string{d.paths.ImagesDir(), d.paths.KernelsDir()} {
		for _, e := range readDir(dir) {
			p := filepath.Join(dir, e.Name())
			switch {
			case strings.HasPrefix(e.Name(), ".staging-") || strings.HasPrefix(e.Name(), ".removing-"):
				remove(p, "kernel staging directory")
			case e.IsDir() && model.ValidateArtifactName(e.Name()) == nil && !recorded[p]:
				remove(p, "unrecorded artifact directory")
			case e.IsDir():
				// A re-pull over a recorded image stages its files beside it.
				for _, f := range readDir(p) {
					if isStagingFile(f.Name()) {
						remove(filepath.Join(p, f.Name()), "staging file")
					}
				}
			}
		}
	}
	// Blobs and packages are downloaded to .NAME.partial-* beside their
	// final name, and renamed only once they verify.
	for _, dir := range []string{filepath.Join(d.paths.LayersDir(), "sha256"), d.paths.DownloadsDir(), filepath.Join(d.paths.DownloadsDir(), "indices")} {
		for _, e := range readDir(dir) {
			if isStagingFile(e.Name()) || strings.HasPrefix(e.Name(), ".fetch-") {
				remove(filepath.Join(dir, e.Name()), "partial download")
			}
		}
	}
	// Root file systems being flattened (pull) or unpacked (import).
	for _, e := range readDir(d.paths.Cache) {
		if e.IsDir() && (strings.HasPrefix(e.Name(), ".rootfs-") || strings.HasPrefix(e.Name(), "banger-import-")) {
			remove(filepath.Join(d.paths.Cache, e.Name()), "unfinished root file system")
		}
	}
}

// isStagingFile matches the temporary names the downloader and the atomic
// writers use: .NAME.partial-RANDOM and .NAME.tmp-RANDOM.
func isStagingFile(name string) bool {
	return strings.HasPrefix(name, ".") && (strings.Contains(name, ".partial-") || strings.Contains(name, ".tmp-"))
}

func readDir(dir string) []os.DirEntry {
	ents, _ := os.ReadDir(dir)
	return ents
}
