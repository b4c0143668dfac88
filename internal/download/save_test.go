package download

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestSaveVerifiesAndLeavesNothingOnFailure(t *testing.T) {
	body := bytes.Repeat([]byte("layer"), 1000)
	sum := sha256.Sum256(body)
	good := Spec{URL: "blob", SHA256: hex.EncodeToString(sum[:]), Size: int64(len(body)), MaxBytes: int64(len(body))}
	for name, c := range map[string]struct {
		spec Spec
		body []byte
		want error
	}{
		"hash mismatch": {good, append(bytes.Repeat([]byte("layer"), 999), []byte("LAYER")...), ErrHashMismatch},
		"short":         {good, body[:100], ErrTruncated},
		"oversized":     {good, append(body, 'x'), ErrTooLarge},
	} {
		dir := t.TempDir()
		err := Save(context.Background(), bytes.NewReader(c.body), c.spec, filepath.Join(dir, "blob"), nil)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("%s: left %d files behind", name, len(ents))
		}
	}
	dir := t.TempDir()
	if err := Save(context.Background(), bytes.NewReader(body), good, filepath.Join(dir, "blob"), nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "blob")); !bytes.Equal(got, body) {
		t.Fatal("saved blob differs")
	}
}
