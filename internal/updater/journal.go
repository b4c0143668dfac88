package updater

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/bangerdev/banger/internal/system"
)

// Journal phases, in the order an update moves through them.
const (
	PhaseSwapping    = "swapping"     // some targets may hold the new binary
	PhaseSwapped     = "swapped"      // every target holds the new binary; not yet healthy
	PhaseRollingBack = "rolling-back" // the old binaries are being restored
	PhaseCommitting  = "committing"   // healthy: backups and install.toml are being finalised
)

const (
	journalSchema   = 1
	maxJournalBytes = 64 << 10
)

// ErrBadJournal reports an update journal that cannot be trusted: not a
// root-owned regular file, malformed, or naming paths other than the
// install's own binaries and staging area.
var ErrBadJournal = errors.New("invalid update journal")

// Journal records an update's swap so a run killed half way can be
// completed or reverted by the next `banger update`, `banger doctor` or
// service start. It lives beside the staging directory, written atomically
// (fsynced) before the first swap and after every step.
type Journal struct {
	Schema int         `json:"schema"`
	From   string      `json:"from"` // version installed before the update
	To     string      `json:"to"`
	Build  BuildInfo   `json:"build"` // the new build, for install.toml
	Phase  string      `json:"phase"`
	Steps  []SwapEntry `json:"steps"` // in swap order
}

// SwapEntry is one binary of the swap. The hashes tell recovery what each
// file is, whatever step the killed update reached.
type SwapEntry struct {
	Target    string `json:"target"`
	Staged    string `json:"staged"`
	OldSHA256 string `json:"old_sha256"`
	NewSHA256 string `json:"new_sha256"`
	Swapped   bool   `json:"swapped"`
}

// JournalPath is where the journal of updates staged in stagingDir lives:
// beside it, not in it, because staging is wiped by every download.
func JournalPath(stagingDir string) string { return stagingDir + ".journal" }

// writeJournal replaces the journal atomically (temporary file, fsync,
// rename, directory fsync).
func writeJournal(path string, j *Journal) error {
	data, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return fmt.Errorf("encode update journal: %w", err)
	}
	if err := system.WriteFileAtomic(path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("write update journal: %w", err)
	}
	return nil
}

func removeJournal(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove update journal: %w", err)
	}
	return system.SyncDir(filepath.Dir(path))
}

// JournalExists reports whether an interrupted update left a journal.
func JournalExists(stagingDir string) bool {
	_, err := os.Lstat(JournalPath(stagingDir))
	return err == nil
}

// readJournal loads and validates the journal. It returns (nil, nil) when
// there is none. Recovery acts as root on what it says, so the file must be
// a regular file owned by us and writable by nobody else, and its paths
// must be exactly the install's targets and their staged copies.
func readJournal(path string, t Targets, stagingDir string) (*Journal, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w %s: %w", ErrBadJournal, path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%w %s: %w", ErrBadJournal, path, err)
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !st.Mode().IsRegular() || !ok || int(sys.Uid) != os.Geteuid() || st.Mode().Perm()&0o022 != 0 {
		return nil, fmt.Errorf("%w %s: not a regular file owned by uid %d and writable only by it", ErrBadJournal, path, os.Geteuid())
	}
	data, err := io.ReadAll(io.LimitReader(f, maxJournalBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%w %s: %w", ErrBadJournal, path, err)
	}
	if len(data) > maxJournalBytes {
		return nil, fmt.Errorf("%w %s: larger than %d bytes", ErrBadJournal, path, maxJournalBytes)
	}
	var j Journal
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return nil, fmt.Errorf("%w %s: %w", ErrBadJournal, path, err)
	}
	if err := j.validate(t, stagingDir); err != nil {
		return nil, fmt.Errorf("%w %s: %w", ErrBadJournal, path, err)
	}
	return &j, nil
}

func (j *Journal) validate(t Targets, stagingDir string) error {
	if j.Schema != journalSchema {
		return fmt.Errorf("schema %d, want %d", j.Schema, journalSchema)
	}
	switch j.Phase {
	case PhaseSwapping, PhaseSwapped, PhaseRollingBack, PhaseCommitting:
	default:
		return fmt.Errorf("unknown phase %q", j.Phase)
	}
	if !ValidVersion(j.To) || !ValidVersion(j.From) && j.From != "" {
		return fmt.Errorf("versions %q → %q", j.From, j.To)
	}
	want := t.all()
	if len(j.Steps) != len(want) {
		return fmt.Errorf("%d steps, want %d", len(j.Steps), len(want))
	}
	for i, s := range j.Steps {
		if s.Target != want[i] {
			return fmt.Errorf("step %d targets %q, want %q", i+1, s.Target, want[i])
		}
		if s.Staged != filepath.Join(stagingDir, "release", filepath.Base(s.Target)) {
			return fmt.Errorf("step %d: staged file %q is not in the staging directory %s", i+1, s.Staged, stagingDir)
		}
		for _, h := range []string{s.OldSHA256, s.NewSHA256} {
			if b, err := hex.DecodeString(h); err != nil || len(b) != sha256.Size {
				return fmt.Errorf("step %d: malformed hash %q", i+1, h)
			}
		}
	}
	return nil
}

// fileSHA256 hashes a regular file without following a final symlink; a
// missing file hashes to "".
func fileSHA256(path string) (string, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return "", fmt.Errorf("hash %s: not a regular file", path)
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
