package imagecat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/bangerdev/banger/internal/system"
)

// Store is the on-disk image store: <Dir>/<name>/rootfs.ext4 and
// <Dir>/<name>/image.json (the Result). Both files appear by rename, and
// image.json is written last: an image without it is unfinished.
type Store struct {
	Dir string // paths.User.ImagesDir()
}

const (
	rootfsFile = "rootfs.ext4"
	metaFile   = "image.json"
)

// RootfsPath is where image name's ext4 file lives.
func (s Store) RootfsPath(name string) string { return filepath.Join(s.Dir, name, rootfsFile) }

func (s Store) metaPath(name string) string { return filepath.Join(s.Dir, name, metaFile) }

// Prepare creates name's directory and returns the rootfs path to build
// into. created reports whether the directory is new (remove it if the
// build fails).
func (s Store) Prepare(name string) (out string, created bool, err error) {
	if err := ValidateName(name); err != nil {
		return "", false, err
	}
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return "", false, fmt.Errorf("create images dir: %w", err)
	}
	switch err := os.Mkdir(filepath.Join(s.Dir, name), 0o755); {
	case err == nil:
		created = true
	case errors.Is(err, fs.ErrExist):
	default:
		return "", false, fmt.Errorf("create image dir %q: %w", name, err)
	}
	return s.RootfsPath(name), created, nil
}

// Save records res as image.json (temp file, then rename). res.Path must be
// the store's rootfs path for res.Name.
func (s Store) Save(res Result) error {
	if err := ValidateName(res.Name); err != nil {
		return err
	}
	want, _ := filepath.Abs(s.RootfsPath(res.Name))
	if got, _ := filepath.Abs(res.Path); got != want {
		return fmt.Errorf("save image %q: rootfs %s is not in the store (want %s)", res.Name, res.Path, want)
	}
	data, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return fmt.Errorf("save image %q: %w", res.Name, err)
	}
	if err := system.WriteFileAtomic(s.metaPath(res.Name), append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("save image %q: %w", res.Name, err)
	}
	return nil
}

// Get reads image name's record; ErrNotFound when it has none.
func (s Store) Get(name string) (Result, error) {
	if err := ValidateName(name); err != nil {
		return Result{}, err
	}
	data, err := os.ReadFile(s.metaPath(name))
	if errors.Is(err, fs.ErrNotExist) {
		return Result{}, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	if err != nil {
		return Result{}, fmt.Errorf("read image %q: %w", name, err)
	}
	var res Result
	if err := json.Unmarshal(data, &res); err != nil {
		return Result{}, fmt.Errorf("read image %q: %w", name, err)
	}
	if res.Name != name {
		return Result{}, fmt.Errorf("read image %q: record names %q", name, res.Name)
	}
	return res, nil
}

// List returns the finished images, sorted by name. Directories without a
// valid image.json (an interrupted build) are skipped.
func (s Store) List() ([]Result, error) {
	ents, err := os.ReadDir(s.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	var out []Result
	for _, e := range ents {
		if !e.IsDir() || ValidateName(e.Name()) != nil {
			continue
		}
		if res, err := s.Get(e.Name()); err == nil {
			out = append(out, res)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Remove deletes image name (record first, so a half-removed image is no
// longer listed). ErrNotFound when there is nothing to remove.
func (s Store) Remove(name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	dir := filepath.Join(s.Dir, name)
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	if err := os.Remove(s.metaPath(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove image %q: %w", name, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove image %q: %w", name, err)
	}
	return nil
}

// Build builds catalog entry e into the store and records it. On failure
// an image directory this call created is removed again.
func (s Store) Build(ctx context.Context, e Entry, opts BuildOptions) (Result, error) {
	return s.produce(e.Name, func(out string) (Result, error) {
		opts.Out = out
		return BuildDebootstrap(ctx, e, opts)
	})
}

// Import imports src as image name into the store and records it.
func (s Store) Import(ctx context.Context, name, src string, opts ImportOptions) (Result, error) {
	return s.produce(name, func(out string) (Result, error) {
		return Import(ctx, name, src, out, opts)
	})
}

func (s Store) produce(name string, make func(out string) (Result, error)) (Result, error) {
	out, created, err := s.Prepare(name)
	if err != nil {
		return Result{}, err
	}
	res, err := make(out)
	if err == nil {
		err = s.Save(res)
	}
	if err != nil && created {
		os.RemoveAll(filepath.Dir(out))
	}
	return res, err
}
