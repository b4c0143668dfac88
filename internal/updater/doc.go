// Package updater implements `banger update`: find a release in the release
// manifest, download and verify it, stage it, check it with the staged
// bangerd, swap the three installed binaries, restart the root helper and the
// owner daemon (VMs keep running: the units use KillMode=process), and roll
// everything back when any step after the first swap fails.
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
// URLs are absolute http(s) URLs or relative to the manifest's own URL.
// "latest" must name a listed release; versions are unique. The manifest
// is not signed. Trust comes from each release's SHA256SUMS, signed with the
// release key: the tarball must be listed there under exactly
// banger_<version>_linux_amd64.tar.gz, so a tampered manifest can at most
// point at another genuine release under its true name.
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
// gzip'd tar of exactly three regular files at the top level: banger,
// bangerd, banger-vsock-agent. Anything else is refused; files are unpacked
// at 0755 whatever their header says.
//
// # Versions
//
// Releases are semver with a "v" (v1.2.3, v1.3.0-rc.1) and are ordered by
// semver precedence. Other names (v0.smoke.0) are development builds with no
// order: an installed development build is offered the manifest's latest
// whenever they differ. Without --to only a newer latest is installed; an
// older version (a downgrade) or a development build needs --to, which must
// name a listed release before anything on the host changes.
package updater
