package api

// vm sync (host → guest, incremental).
var MethodVMSync = Method[VMSync, SyncResult]{Name: "vm.sync", Tracked: true}

// VMSync is vm.sync's params: one round of mirroring Local (an absolute
// host directory, read by the daemon, which is the CLI's user) into Guest.
type VMSync struct {
	Name     string   `json:"name"`
	Local    string   `json:"local"`
	Guest    string   `json:"guest"`
	Excludes []string `json:"excludes,omitempty"` // .gitignore-style, after Local/.gitignore
	Delete   bool     `json:"delete,omitempty"`   // remove guest names Local lacks
}

// SyncResult tells what one round did.
type SyncResult struct {
	Scanned    int     `json:"scanned"`
	Uploaded   int     `json:"uploaded"`
	Bytes      int64   `json:"bytes"`
	Hashed     int     `json:"hashed"`
	Removed    int     `json:"removed"`
	DurationMS float64 `json:"duration_ms"`
	// Phases of DurationMS: the host's walk, the guest's listing, sha256
	// on both sides, removing and uploading.
	LocalMS    float64 `json:"local_ms"`
	ManifestMS float64 `json:"manifest_ms"`
	HashMS     float64 `json:"hash_ms"`
	ApplyMS    float64 `json:"apply_ms"`
	// CachedListing: the guest said nothing changed since the last round,
	// so its listing was the one the daemon kept.
	CachedListing bool `json:"cached_listing"`
}
