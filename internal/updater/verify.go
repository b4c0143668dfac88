package updater

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	_ "embed"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"

	"github.com/bangerdev/banger/internal/download"
)

// ReleasePublicKey is the PEM (PKIX, ECDSA P-256) public key release
// SHA256SUMS files are signed with. The private key is held by the
// maintainers and is never in the repository; local and development
// releases are signed with a key tools/mkrelease generates, verified
// through the --pubkey-file test flag.
//
//go:embed keys/release.pub
var ReleasePublicKey []byte

// ErrBadSignature reports a SHA256SUMS whose signature does not verify, or
// a signature that is not a well-formed cosign blob signature.
var ErrBadSignature = errors.New("release signature does not verify")

// ParsePublicKey decodes a PEM "PUBLIC KEY" holding an ECDSA P-256 key.
func ParsePublicKey(pubPEM []byte) (*ecdsa.PublicKey, error) {
	block, rest := pem.Decode(pubPEM)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, errors.New("parse release public key: no PEM PUBLIC KEY block")
	}
	if strings.TrimSpace(string(rest)) != "" {
		return nil, errors.New("parse release public key: trailing data after the PEM block")
	}
	key, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse release public key: %w", err)
	}
	ec, ok := key.(*ecdsa.PublicKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, fmt.Errorf("parse release public key: want an ECDSA P-256 key, got %T", key)
	}
	return ec, nil
}

// VerifyBlobSignature checks sigB64 over blob with the embedded release key.
func VerifyBlobSignature(blob, sigB64 []byte) error {
	return VerifyBlobSignatureWithKey(ReleasePublicKey, blob, sigB64)
}

// VerifyBlobSignatureWithKey checks a cosign-compatible blob signature
// (`cosign sign-blob --key`, or `openssl dgst -sha256 -sign KEY | base64`):
// standard base64 (surrounding whitespace allowed, nothing else) of an
// ASN.1 DER ECDSA signature over SHA-256(blob). Non-canonical base64 and any
// byte after the DER sequence are rejected.
func VerifyBlobSignatureWithKey(pubPEM, blob, sigB64 []byte) error {
	pub, err := ParsePublicKey(pubPEM)
	if err != nil {
		return err
	}
	der, err := base64.StdEncoding.Strict().DecodeString(strings.TrimSpace(string(sigB64)))
	if err != nil {
		return fmt.Errorf("%w: signature is not base64: %w", ErrBadSignature, err)
	}
	if err := checkStrictDER(der); err != nil {
		return fmt.Errorf("%w: %w", ErrBadSignature, err)
	}
	digest := sha256.Sum256(blob)
	if !ecdsa.VerifyASN1(pub, digest[:], der) {
		return ErrBadSignature
	}
	return nil
}

// checkStrictDER accepts exactly SEQUENCE { INTEGER r, INTEGER s } with
// nothing after it.
func checkStrictDER(der []byte) error {
	input := cryptobyte.String(der)
	var inner cryptobyte.String
	var r, s []byte
	if !input.ReadASN1(&inner, asn1.SEQUENCE) {
		return errors.New("signature is not a DER sequence")
	}
	if !input.Empty() {
		return errors.New("trailing bytes after the DER signature")
	}
	if !inner.ReadASN1Integer(&r) || !inner.ReadASN1Integer(&s) || !inner.Empty() {
		return errors.New("signature sequence is not two integers")
	}
	return nil
}

// FetchAndVerifySignature fetches the signature at sigURL and verifies it
// over blob with the embedded release key.
func FetchAndVerifySignature(ctx context.Context, client *http.Client, sigURL string, blob []byte) error {
	return FetchAndVerifySignatureWithKey(ctx, client, sigURL, blob, ReleasePublicKey)
}

// FetchAndVerifySignatureWithKey fetches the signature at sigURL (size
// capped) and verifies it over blob with pubPEM.
func FetchAndVerifySignatureWithKey(ctx context.Context, client *http.Client, sigURL string, blob, pubPEM []byte) error {
	sig, err := download.GetBounded(ctx, client, sigURL, maxSignatureBytes)
	if err != nil {
		return fmt.Errorf("fetch signature: %w", err)
	}
	if err := VerifyBlobSignatureWithKey(pubPEM, blob, sig); err != nil {
		return fmt.Errorf("verify %s: %w", sigURL, err)
	}
	return nil
}
