package guestinit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func TestWriteHostKey(t *testing.T) {
	dir := t.TempDir()
	seen := map[string]bool{}
	for _, typ := range []string{"ed25519", "ecdsa", "ed25519"} {
		path := filepath.Join(dir, "ssh_host_"+typ+"_key")
		pub, err := writeHostKey(typ, path)
		if err != nil {
			t.Fatal(err)
		}
		if seen[pub] {
			t.Fatalf("%s: the same key twice", typ)
		}
		seen[pub] = true
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		signer, err := ssh.ParsePrivateKey(raw) // what sshd does with it
		if err != nil {
			t.Fatalf("%s: sshd could not load the key: %v", typ, err)
		}
		if got := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))); got != pub {
			t.Fatalf("%s: private key's public half %q, returned %q", typ, got, pub)
		}
		if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: private key mode %v", typ, st.Mode().Perm())
		}
		if b, _ := os.ReadFile(path + ".pub"); strings.TrimSpace(string(b)) != pub {
			t.Fatalf("%s: .pub %q", typ, b)
		}
	}
	if _, err := writeHostKey("rsa", filepath.Join(dir, "x")); err == nil {
		t.Fatal("an unknown key type was accepted")
	}
}
