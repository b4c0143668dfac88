package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/bangerdev/banger/internal/model"
)

// ErrInUse: an image or kernel that a VM still names cannot be deleted.
var ErrInUse = errors.New("in use")

// PutImage creates or replaces the image with img.Name. A zero CreatedAt is
// now.
func (s *Store) PutImage(ctx context.Context, img model.Image) (model.Image, error) {
	if err := model.ValidateArtifactName(img.Name); err != nil {
		return model.Image{}, fmt.Errorf("put image: %w", err)
	}
	if img.CreatedAt.IsZero() {
		img.CreatedAt = s.now()
	}
	img.CreatedAt = storedTime(img.CreatedAt)
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO images (name, source, digest, size_bytes, path, created_at)
			VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET source = excluded.source, digest = excluded.digest,
				size_bytes = excluded.size_bytes, path = excluded.path, created_at = excluded.created_at`,
			img.Name, img.Source, img.Digest, img.SizeBytes, img.Path, encodeTime(img.CreatedAt))
		return err
	})
	if err != nil {
		return model.Image{}, fmt.Errorf("put image %q: %w", img.Name, err)
	}
	return img, nil
}

const imageColumns = `name, source, digest, size_bytes, path, created_at`

func scanImage(sc scanner) (model.Image, error) {
	var img model.Image
	var created string
	if err := sc.Scan(&img.Name, &img.Source, &img.Digest, &img.SizeBytes, &img.Path, &created); err != nil {
		return img, err
	}
	return img, decodeTimes(created, &img.CreatedAt)
}

// GetImage returns the image called name.
func (s *Store) GetImage(ctx context.Context, name string) (model.Image, error) {
	img, err := scanImage(s.db.QueryRowContext(ctx, `SELECT `+imageColumns+` FROM images WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return model.Image{}, fmt.Errorf("image %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return model.Image{}, fmt.Errorf("get image %q: %w", name, err)
	}
	return img, nil
}

// ListImages returns every image ordered by name.
func (s *Store) ListImages(ctx context.Context) ([]model.Image, error) {
	imgs, err := list(ctx, s.db, scanImage, `SELECT `+imageColumns+` FROM images ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	return imgs, nil
}

// ImageInUse returns the names of the VMs made from the image, sorted.
func (s *Store) ImageInUse(ctx context.Context, name string) ([]string, error) {
	names, err := usedBy(ctx, s.db, "image", name)
	if err != nil {
		return nil, fmt.Errorf("vms using image %q: %w", name, err)
	}
	return names, nil
}

// DeleteImage removes the image's record (not its file). It refuses with
// ErrInUse, naming the VMs, while any VM uses it: checked in the same
// transaction, so a VM created meanwhile cannot slip through.
func (s *Store) DeleteImage(ctx context.Context, name string) error {
	err := s.write(ctx, func(tx *sql.Tx) error { return deleteArtifact(ctx, tx, "images", "image", name) })
	if err != nil {
		return fmt.Errorf("delete image %q: %w", name, err)
	}
	return nil
}

// DeleteImageInUse removes the image's record even while VMs use it: their
// disks are copies, so they keep working (banger image rm --force).
func (s *Store) DeleteImageInUse(ctx context.Context, name string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		return expectOne(tx.ExecContext(ctx, `DELETE FROM images WHERE name = ?`, name))
	})
	if err != nil {
		return fmt.Errorf("delete image %q: %w", name, err)
	}
	return nil
}

// PutKernel creates or replaces the kernel with k.Name. A zero CreatedAt is
// now.
func (s *Store) PutKernel(ctx context.Context, k model.Kernel) (model.Kernel, error) {
	if err := model.ValidateArtifactName(k.Name); err != nil {
		return model.Kernel{}, fmt.Errorf("put kernel: %w", err)
	}
	if k.CreatedAt.IsZero() {
		k.CreatedAt = s.now()
	}
	k.CreatedAt = storedTime(k.CreatedAt)
	if k.VMMs == nil {
		k.VMMs = []model.VMMKind{}
	}
	vmms, err := json.Marshal(k.VMMs)
	if err != nil {
		return model.Kernel{}, fmt.Errorf("put kernel %q: %w", k.Name, err)
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO kernels (`+kernelColumns+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET release = excluded.release, source = excluded.source,
				sha256 = excluded.sha256, path = excluded.path, vmlinux = excluded.vmlinux,
				modules_dir = excluded.modules_dir, vmms = excluded.vmms, created_at = excluded.created_at`,
			k.Name, k.Release, k.Source, k.SHA256, k.Path, k.VMLinux, k.ModulesDir, string(vmms), encodeTime(k.CreatedAt))
		return err
	})
	if err != nil {
		return model.Kernel{}, fmt.Errorf("put kernel %q: %w", k.Name, err)
	}
	return k, nil
}

const kernelColumns = `name, release, source, sha256, path, vmlinux, modules_dir, vmms, created_at`

func scanKernel(sc scanner) (model.Kernel, error) {
	var k model.Kernel
	var vmms, created string
	if err := sc.Scan(&k.Name, &k.Release, &k.Source, &k.SHA256, &k.Path, &k.VMLinux, &k.ModulesDir, &vmms, &created); err != nil {
		return k, err
	}
	if err := json.Unmarshal([]byte(vmms), &k.VMMs); err != nil {
		return k, fmt.Errorf("decode vmms of kernel %q: %w", k.Name, err)
	}
	return k, decodeTimes(created, &k.CreatedAt)
}

// GetKernel returns the kernel called name.
func (s *Store) GetKernel(ctx context.Context, name string) (model.Kernel, error) {
	k, err := scanKernel(s.db.QueryRowContext(ctx, `SELECT `+kernelColumns+` FROM kernels WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return model.Kernel{}, fmt.Errorf("kernel %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return model.Kernel{}, fmt.Errorf("get kernel %q: %w", name, err)
	}
	return k, nil
}

// ListKernels returns every kernel ordered by name.
func (s *Store) ListKernels(ctx context.Context) ([]model.Kernel, error) {
	ks, err := list(ctx, s.db, scanKernel, `SELECT `+kernelColumns+` FROM kernels ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list kernels: %w", err)
	}
	return ks, nil
}

// KernelInUse returns the names of the VMs that boot the kernel, sorted.
func (s *Store) KernelInUse(ctx context.Context, name string) ([]string, error) {
	names, err := usedBy(ctx, s.db, "kernel", name)
	if err != nil {
		return nil, fmt.Errorf("vms using kernel %q: %w", name, err)
	}
	return names, nil
}

// DeleteKernel removes the kernel's record (not its files); ErrInUse while
// any VM boots it.
func (s *Store) DeleteKernel(ctx context.Context, name string) error {
	err := s.write(ctx, func(tx *sql.Tx) error { return deleteArtifact(ctx, tx, "kernels", "kernel", name) })
	if err != nil {
		return fmt.Errorf("delete kernel %q: %w", name, err)
	}
	return nil
}

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// usedBy lists VM names whose column (image or kernel, never user input)
// equals name.
func usedBy(ctx context.Context, q querier, column, name string) ([]string, error) {
	return list(ctx, q, func(sc scanner) (string, error) {
		var n string
		return n, sc.Scan(&n)
	}, `SELECT name FROM vms WHERE `+column+` = ? ORDER BY name`, name)
}

func deleteArtifact(ctx context.Context, tx *sql.Tx, table, column, name string) error {
	users, err := usedBy(ctx, tx, column, name)
	if err != nil {
		return err
	}
	if len(users) > 0 {
		return fmt.Errorf("used by vm %s: %w", strings.Join(users, ", "), ErrInUse)
	}
	return expectOne(tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE name = ?`, name))
}

// list runs a query and scans every row.
func list[T any](ctx context.Context, q querier, scan func(scanner) (T, error), query string, args ...any) ([]T, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
