package imagecat

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// Result describes a finished image; the store keeps it as image.json.
type Result struct {
	Name      string    `json:"name"`
	Source    string    `json:"source"` // "debootstrap:bookworm@MIRROR", "import:dir:/path", ...
	Digest    string    `json:"digest"` // "sha256:<hex>" of the ext4 file
	SizeBytes int64     `json:"size_bytes"`
	Path      string    `json:"path"`
	CreatedAt time.Time `json:"created_at"`
}

// Owner is the uid/gid an image file is handed to when a root process
// builds it for a user's store.
type Owner struct{ UID, GID int }

// finish hashes the image at path and fills a Result.
func finish(name, source, path string) (Result, error) {
	f, err := os.Open(path)
	if err != nil {
		return Result{}, fmt.Errorf("hash image %s: %w", path, err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(h, f, make([]byte, 1<<20))
	if err != nil {
		return Result{}, fmt.Errorf("hash image %s: %w", path, err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return Result{}, fmt.Errorf("hash image %s: %w", path, err)
	}
	return Result{
		Name:      name,
		Source:    source,
		Digest:    "sha256:" + hex.EncodeToString(h.Sum(nil)),
		SizeBytes: n,
		Path:      abs,
		CreatedAt: time.Now().UTC(),
	}, nil
}

// tempBeside makes a unique, not yet existing path next to dst, so a rename
// onto dst is atomic (same filesystem).
func tempBeside(dst string) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return "", err
	}
	name := f.Name()
	f.Close()
	if err := os.Remove(name); err != nil {
		return "", err
	}
	return name, nil
}

// publish hands tmp to owner (if any) and renames it onto dst.
func publish(tmp, dst string, owner *Owner) error {
	if err := os.Chmod(tmp, 0o644); err != nil {
		return err
	}
	if owner != nil {
		if err := os.Chown(tmp, owner.UID, owner.GID); err != nil {
			return err
		}
	}
	return os.Rename(tmp, dst)
}
