package api

import "github.com/bangerdev/banger/internal/model"

// Plan images: a base debootstrap image with a project's planned Debian
// packages added (banger plan, vm run --workspace), built once and kept
// under a name derived from the plan's hash.
var (
	// MethodImagePlan makes (or finds) the plan image, with progress
	// events while it builds.
	MethodImagePlan = Method[ImagePlan, ImagePlanned]{Name: "image.plan", Tracked: true}
	// MethodHelperImagePlan is the root helper's side of it. The caller
	// names a catalog entry and package=version pairs only; the helper
	// validates them against Debian's grammars, picks the output path
	// itself and checks the versions installed.
	MethodHelperImagePlan = Method[HelperImagePlan, HelperImageBuilt]{Name: "image.plan"}
)

// PlanPackage is one Debian package at the exact version a plan resolved.
type PlanPackage struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// ImagePlan is image.plan's params on the daemon.
type ImagePlan struct {
	Base     string        `json:"base,omitempty"` // a debootstrap catalog entry; default: the catalog's default
	Packages []PlanPackage `json:"packages"`
}

// ImagePlanned is image.plan's result: the image, and whether it was
// already there.
type ImagePlanned struct {
	Image  model.Image `json:"image"`
	Cached bool        `json:"cached"`
}

// HelperImagePlan is image.plan's params on the root helper.
type HelperImagePlan struct {
	Base     string        `json:"base"`
	Packages []PlanPackage `json:"packages"`
}
