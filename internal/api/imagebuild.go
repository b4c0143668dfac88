package api

import "time"

// MethodHelperImageBuild is the root helper's image build: debootstrap needs
// root, the owner daemon does not have it. Progress events stream while it
// runs. The caller names a catalog entry only: the helper picks the output
// path itself, in the owner's image store, so a caller cannot aim a
// root-made file anywhere.
var MethodHelperImageBuild = Method[HelperImageBuild, HelperImageBuilt]{Name: "image.build"}

// HelperImageBuild is image.build's params on the root helper.
type HelperImageBuild struct {
	Name string `json:"name"` // a debootstrap entry of the embedded image catalog
}

// HelperImageBuilt is image.build's result on the root helper: the built
// image (imagecat.Result's fields). Path is <images dir>/<name>/rootfs.ext4
// of the owner's store, owned by the owner; the daemon records it
// (image.json and its database) itself.
type HelperImageBuilt struct {
	Name      string    `json:"name"`
	Source    string    `json:"source"`
	Digest    string    `json:"digest"` // "sha256:<hex>" of the ext4 file
	SizeBytes int64     `json:"size_bytes"`
	Path      string    `json:"path"`
	CreatedAt time.Time `json:"created_at"`
}
