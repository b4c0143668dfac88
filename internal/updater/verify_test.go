package updater

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/bangerdev/banger/internal/testutil"
)

// TestOpenSSLSignatureVerifies pins cosign compatibility: a signature made
// the way the release builder's shell twin and `cosign sign-blob` make it
// (openssl dgst -sha256 -sign KEY SHA256SUMS | base64 -w0) must verify.
func TestOpenSSLSignatureVerifies(t *testing.T) {
	openssl := testutil.RequireBinary(t, "openssl")
	dir := t.TempDir()
	key := filepath.Join(dir, "key.pem")
	pub := filepath.Join(dir, "pub.pem")
	sums := filepath.Join(dir, "SHA256SUMS")
	blob := []byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef  banger_v0.2.0_linux_amd64.tar.gz\n")
	if err := os.WriteFile(sums, blob, 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(name string, args ...string) []byte {
		t.Helper()
		out, err := exec.Command(name, args...).Output()
		if err != nil {
			t.Fatalf("%s %v: %v", name, args, err)
		}
		return out
	}
	run(openssl, "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
	run(openssl, "ec", "-in", key, "-pubout", "-out", pub)
	sig := run("sh", "-c", `"$0" dgst -sha256 -sign "$1" "$2" | base64 -w0`, openssl, key, sums)
	pubPEM, err := os.ReadFile(pub)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyBlobSignatureWithKey(pubPEM, blob, sig); err != nil {
		t.Fatalf("openssl signature rejected: %v", err)
	}
	if err := VerifyBlobSignatureWithKey(pubPEM, flipByte(blob, 3), sig); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("openssl signature over a changed blob: %v, want ErrBadSignature", err)
	}
	// And the other way round: our verifier's counterpart in openssl accepts
	// a Go signature, so both sides agree on the format.
	goSig := signWithPEMKey(t, key, blob)
	sigFile := filepath.Join(dir, "go.sig")
	der, _ := base64.StdEncoding.DecodeString(string(goSig))
	os.WriteFile(sigFile, der, 0o644)
	run(openssl, "dgst", "-sha256", "-verify", pub, "-signature", sigFile, sums)
}

func signWithPEMKey(t *testing.T, keyFile string, blob []byte) []byte {
	t.Helper()
	data, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	key, err := x509.ParseECPrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return signBlob(t, key, blob)
}

func TestVerifyRejectsMalformedSignatures(t *testing.T) {
	key, pub := newKey(t)
	blob := []byte("sums\n")
	d := sha256.Sum256(blob)
	var der []byte
	// Sign until the DER length needs base64 padding, so the unpadded case
	// below really differs from the padded encoding.
	for i := 0; i < 100 && len(der)%3 == 0; i++ {
		var err error
		if der, err = ecdsa.SignASN1(rand.Reader, key, d[:]); err != nil {
			t.Fatal(err)
		}
	}
	if len(der)%3 == 0 {
		t.Fatal("no signature needing base64 padding in 100 tries")
	}
	good := base64.StdEncoding.EncodeToString(der)
	if err := VerifyBlobSignatureWithKey(pub, blob, []byte(good+"\n")); err != nil {
		t.Fatalf("valid signature with a trailing newline rejected: %v", err)
	}
	cases := map[string]string{
		"trailing bytes after DER": base64.StdEncoding.EncodeToString(append(append([]byte(nil), der...), 0x00)),
		"trailing DER element":     base64.StdEncoding.EncodeToString(append(append([]byte(nil), der...), 0x02, 0x01, 0x01)),
		"not base64":               "!!" + good,
		"unpadded base64":          base64.RawStdEncoding.EncodeToString(der),
		"url-safe alphabet":        base64.URLEncoding.EncodeToString(append(der, 0xfb, 0xff)),
		"empty":                    "",
		"flipped signature byte":   base64.StdEncoding.EncodeToString(flipByte(der, len(der)-2)),
	}
	for name, sig := range cases {
		if err := VerifyBlobSignatureWithKey(pub, blob, []byte(sig)); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: %v, want ErrBadSignature", name, err)
		}
	}
	_, otherPub := newKey(t)
	if err := VerifyBlobSignatureWithKey(otherPub, blob, []byte(good)); !errors.Is(err, ErrBadSignature) {
		t.Errorf("signature checked with another key: %v, want ErrBadSignature", err)
	}
}

func TestParsePublicKeyRejectsOtherKeys(t *testing.T) {
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(edPub)
	edPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	if _, err := ParsePublicKey(edPEM); err == nil {
		t.Fatal("ed25519 key accepted")
	}
	if _, err := ParsePublicKey([]byte("not pem")); err == nil {
		t.Fatal("garbage accepted as key")
	}
	if _, err := ParsePublicKey(ReleasePublicKey); err != nil {
		t.Fatalf("embedded release key: %v", err)
	}
}

func TestFetchAndVerifySignature(t *testing.T) {
	rs := newReleaseServer(t)
	blob := []byte("payload")
	rs.set("/good.sig", signBlob(t, rs.key, blob))
	rs.set("/huge.sig", make([]byte, maxSignatureBytes+1))
	ctx := context.Background()
	if err := FetchAndVerifySignatureWithKey(ctx, nil, rs.srv.URL+"/good.sig", blob, rs.pub); err != nil {
		t.Fatal(err)
	}
	if err := FetchAndVerifySignatureWithKey(ctx, nil, rs.srv.URL+"/huge.sig", blob, rs.pub); err == nil {
		t.Fatal("oversized signature accepted")
	}
	if err := FetchAndVerifySignatureWithKey(ctx, nil, rs.srv.URL+"/missing.sig", blob, rs.pub); err == nil {
		t.Fatal("missing signature accepted")
	}
	// The embedded key did not make this signature.
	if err := FetchAndVerifySignature(ctx, nil, rs.srv.URL+"/good.sig", blob); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("verification with the embedded key: %v, want ErrBadSignature", err)
	}
}
