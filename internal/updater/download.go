package updater

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/bangerdev/banger/internal/download"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/progress"
)

// ErrNotInSums reports a tarball that the release's SHA256SUMS does not list.
var ErrNotInSums = errors.New("tarball not listed in SHA256SUMS")

// ParseSHA256SUMS parses `sha256sum` output ("<64 hex>  <name>" or
// "<64 hex> *<name>" per line) into name → lower-case hex. Malformed lines
// and duplicate names are errors; lines starting with "#" are comments
// (see ReleasedAt).
func ParseSHA256SUMS(data []byte) (map[string]string, error) {
	sums := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		hash, name, ok := strings.Cut(line, " ")
		if ok {
			name = strings.TrimPrefix(strings.TrimPrefix(name, " "), "*")
		}
		if _, err := hex.DecodeString(hash); !ok || err != nil || len(hash) != 64 || name == "" || strings.ContainsAny(name, "/\\") {
			return nil, fmt.Errorf("parse SHA256SUMS line %d: malformed", n)
		}
		if _, dup := sums[name]; dup {
			return nil, fmt.Errorf("parse SHA256SUMS line %d: %s listed twice", n, name)
		}
		sums[name] = strings.ToLower(hash)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("parse SHA256SUMS: %w", err)
	}
	return sums, nil
}

// releasedPrefix starts the comment line of SHA256SUMS that dates the
// release. SHA256SUMS is the signed document, so the date is as trustworthy
// as the hashes; the manifest's published_at is not.
const releasedPrefix = "# released: "

// ReleasedAt returns the release date a SHA256SUMS carries ("# released:
// <RFC 3339>"); ok is false when it has none (releases made before the line
// existed). A malformed or repeated date line is an error. Only call it on
// a SHA256SUMS whose signature verified.
func ReleasedAt(sums []byte) (at time.Time, ok bool, err error) {
	sc := bufio.NewScanner(bytes.NewReader(sums))
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		rest, found := strings.CutPrefix(line, releasedPrefix)
		if !found {
			continue
		}
		if ok {
			return time.Time{}, false, errors.New("SHA256SUMS dates the release twice")
		}
		at, err = time.Parse(time.RFC3339, strings.TrimSpace(rest))
		if err != nil {
			return time.Time{}, false, fmt.Errorf("SHA256SUMS release date: %w", err)
		}
		ok = true
	}
	return at, ok, sc.Err()
}

// SumsHeader is the comment line tools/mkrelease puts first in SHA256SUMS.
func SumsHeader(releasedAt time.Time) string {
	return releasedPrefix + releasedAt.UTC().Format(time.RFC3339) + "\n"
}

// FetchSignedSums fetches rel's SHA256SUMS and returns it once its
// signature verifies with pubPEM; nothing in it may be trusted before.
func FetchSignedSums(ctx context.Context, client *http.Client, rel Release, pubPEM []byte) ([]byte, error) {
	sums, err := download.GetBounded(ctx, client, rel.SHA256Sums, maxSumsBytes)
	if err != nil {
		return nil, fmt.Errorf("fetch SHA256SUMS of %s: %w", rel.Version, err)
	}
	if err := FetchAndVerifySignatureWithKey(ctx, client, rel.Signature, sums, pubPEM); err != nil {
		return nil, fmt.Errorf("SHA256SUMS of %s: %w", rel.Version, err)
	}
	return sums, nil
}

// DefaultStagingDir is where updates are downloaded and unpacked.
func DefaultStagingDir(sys paths.System) string { return sys.StagingDir() }

// EnsureStagingDir creates dir (0700) if needed and checks that it is a real
// directory (not a symlink) owned by the current user, so nobody else can
// swap files under a root updater.
func EnsureStagingDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create staging directory: %w", err)
	}
	st, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("check staging directory: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("staging directory %s is not a directory", dir)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() {
		return fmt.Errorf("staging directory %s is owned by uid %d, not by the updater", dir, sys.Uid)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("restrict staging directory: %w", err)
	}
	return nil
}

// PrepareCleanStaging empties dir (removing leftovers of an earlier,
// interrupted update) and recreates it.
func PrepareCleanStaging(dir string) error {
	if err := os.RemoveAll(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("clear staging directory: %w", err)
	}
	return EnsureStagingDir(dir)
}

// Downloaded is a release tarball fetched and verified into staging.
type Downloaded struct {
	Tarball string // path of the verified tarball in the staging directory
	Sums    []byte // the signed SHA256SUMS document
	SHA256  string // the tarball's verified hash
}

// DownloadRelease fetches rel's SHA256SUMS and its signature and verifies
// the signature with pubPEM before trusting any hash in it; then it streams
// the tarball into a freshly emptied stagingDir, hashing on the fly. Nothing
// is written to stagingDir before the signature verifies, and a tarball
// whose hash does not match is never left there.
func DownloadRelease(ctx context.Context, client *http.Client, rel Release, pubPEM []byte, stagingDir string, report progress.Func) (Downloaded, error) {
	sums, err := FetchSignedSums(ctx, client, rel, pubPEM)
	if err != nil {
		return Downloaded{}, fmt.Errorf("download %s: %w", rel.Version, err)
	}
	table, err := ParseSHA256SUMS(sums)
	if err != nil {
		return Downloaded{}, fmt.Errorf("download %s: %w", rel.Version, err)
	}
	name := TarballName(rel.Version)
	if tarballBase(rel.Tarball) != name {
		return Downloaded{}, fmt.Errorf("download %s: tarball URL %s is not named %s", rel.Version, rel.Tarball, name)
	}
	want, ok := table[name]
	if !ok {
		return Downloaded{}, fmt.Errorf("download %s: %s: %w", rel.Version, name, ErrNotInSums)
	}
	if err := PrepareCleanStaging(stagingDir); err != nil {
		return Downloaded{}, fmt.Errorf("download %s: %w", rel.Version, err)
	}
	dst := filepath.Join(stagingDir, name)
	err = download.FetchVerified(ctx, client, download.Spec{
		URL: rel.Tarball, SHA256: want, MaxBytes: maxTarballBytes, Label: name,
	}, dst, report)
	if err != nil {
		return Downloaded{}, fmt.Errorf("download %s: %w", rel.Version, err)
	}
	return Downloaded{Tarball: dst, Sums: sums, SHA256: want}, nil
}
