// Package updater implements `banger update`: find a release in the release
// manifest, download and verify it, stage it, check it with the staged
// bangerd, swap the four installed binaries, restart the root helper and the
// owner daemon (VMs keep running: the units use KillMode=process), check
// the result with the new banger's own doctor, and roll everything back
// when any step after the first swap fails.
//
// # Release manifest (schema 1)
//
//	{
//	  "schema": 1,
//	  "latest": "v0.2.0",
//	  "releases": [
//	    {
//	      "version": "v0.2.0",
//	      "tarball": "v0.2.0/banger_v0.2.0_linux_amd64.tar.gz",
//	      "sha256sums": "v0.2.0/SHA256SUMS",
//	      "signature": "v0.2.0/SHA256SUMS.sig",
//	      "published_at": "2026-05-01T12:00:00Z"
//	    }
//	  ]
//	}
//
// URLs are absolute or relative to the manifest's own URL. Every URL the
// updater fetches, redirects included, must be https, or plain http to a
// loopback host (127.0.0.0/8, ::1, localhost: local test servers); anything
// else is refused naming the URL (ErrInsecureURL). "latest" must name a
// listed release; versions are unique. The manifest is not signed. Trust
// comes from each release's SHA256SUMS, signed with the release key: the
// tarball must be listed there under exactly
// banger_<version>_linux_amd64.tar.gz, so a tampered manifest can at most
// point at another genuine release under its true name, or hide newer ones
// (a freeze). Against the freeze, SHA256SUMS carries the release date as
// its first line, "# released: <RFC 3339>", under the signature; `update
// --check` verifies the latest release's SHA256SUMS and prints that date,
// so a manifest stuck on an old release shows its age. published_at in the
// manifest is informational only.
//
// # Signature
//
// SHA256SUMS.sig is what `cosign sign-blob --key` writes, equivalently
// `openssl dgst -sha256 -sign KEY SHA256SUMS | base64 -w0`: base64 of an
// ASN.1 DER ECDSA P-256 signature over SHA-256 of the SHA256SUMS bytes. The
// public key (keys/release.pub) is embedded; the private key is held by the
// maintainers. Local and development releases come from tools/mkrelease,
// which generates its own key pair; `banger update --pubkey-file` (hidden,
// for tests) verifies against it.
//
// # Tarball
//
// gzip'd tar of exactly four regular files at the top level: banger,
// bangerd, banger-vsock-agent and banger-helper (the root helper, a binary
// of its own since the release that grew the set from three; it installs
// to /usr/local/lib/banger/banger-helper). Anything else is refused; files
// are unpacked at 0755 whatever their header says. They are swapped in the
// order agent → helper → bangerd → banger, journalled per binary, and
// rolled back in reverse. An install of an earlier, three-binary release
// has no helper binary to replace: the update refuses it before anything
// changes ("not installed") and `sudo banger system install` moves it to
// four binaries.
//
// # Versions
//
// Releases are semver with a "v" (v1.2.3, v1.3.0-rc.1) and are ordered by
// semver precedence. Other names (v0.smoke.0) are development builds with no
// order: an installed development build is offered the manifest's latest
// whenever they differ. Without --to only a newer latest is installed; an
// older version (a downgrade) or a development build needs --to, which must
// name a listed release before anything on the host changes.
//
// # Interrupted updates (the journal)
//
// Before the first swap, Run writes a journal beside the staging directory
// (<staging>.journal, root-owned 0600, written through a fsynced temporary
// file and a rename): the versions, the new build, and per binary its
// target, its staged copy, the SHA-256 of the old and the new binary and
// whether it was swapped. It is rewritten after every swap and at every
// phase change: swapping → swapped → committing, or → rolling-back. It is
// removed only when the update is committed (after the new banger's own
// `doctor --json` judged the store, daemon and root helper healthy; then
// the .previous backups are dropped and install.toml updated) or fully
// rolled back and the services restarted. While it exists nothing deletes
// the .previous backups: the next update replays it before downloading.
//
// The journal is replayed (Recover) by the next `banger update` (under the
// update lock, before anything else), by `banger doctor` run as root, and
// by the supervisor's service start. A journal that is not a regular file
// owned by root and writable only by it, or whose paths are not exactly
// the install's four binaries and their staged copies, is refused and
// kept: recovery acts on nothing it says. Policy, per phase:
//
//   - swapping or swapped: the update is completed when every target holds
//     either its old or its new binary (by hash) and every staged copy
//     still to swap has the hash recorded after the signed tarball was
//     verified. The remaining binaries are swapped, the services
//     restarted, the new doctor run; healthy → committed, else reverted.
//     A staged copy missing or altered, or a target that is neither
//     version, means revert.
//   - rolling-back: reverted.
//   - committing: the commit is finished.
//
// Revert restores, in reverse swap order, every target that holds the new
// binary from its .previous (whose hash must be the old one), leaves
// targets already old alone, refuses to touch a target holding neither
// version, then restarts the services. A replay that cannot finish keeps
// the journal, so the next one retries. A reinstall (`banger system
// install`) discards the journal, uninstall removes it.
package updater
