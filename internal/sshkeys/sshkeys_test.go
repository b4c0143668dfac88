package sshkeys

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/bangerdev/banger/internal/paths"
)

func testFiles(t *testing.T) Files {
	dir := t.TempDir()
	return FilesFor(paths.User{Config: filepath.Join(dir, "config")})
}

func TestEnsureKeyOnceEvenWhenRacing(t *testing.T) {
	f := testFiles(t)
	const n = 8
	lines := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := EnsureKey(f)
			if err != nil {
				t.Error(err)
			}
			lines[i] = l
		}()
	}
	wg.Wait()
	for _, l := range lines[1:] {
		if l != lines[0] {
			t.Fatalf("racing callers got different keys: %q vs %q", l, lines[0])
		}
	}
	if !strings.HasPrefix(lines[0], "ssh-ed25519 ") {
		t.Fatalf("authorized line %q", lines[0])
	}
	st, err := os.Stat(f.Key)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("private key: %v %v", st, err)
	}
	pub, _ := os.ReadFile(f.Key + ".pub")
	if strings.TrimSpace(string(pub)) != lines[0] {
		t.Fatalf(".pub %q does not match %q", pub, lines[0])
	}
	if left, _ := filepath.Glob(f.Key + ".new-*"); len(left) != 0 {
		t.Fatalf("temporary keys left: %v", left)
	}
	again, err := EnsureKey(f)
	if err != nil || again != lines[0] {
		t.Fatalf("second EnsureKey: %q, %v", again, err)
	}
}

func TestConfigIsValidAndStrict(t *testing.T) {
	sshBin, err := exec.LookPath("ssh")
	if err != nil {
		t.Skip("no ssh client to parse the config with")
	}
	f := testFiles(t)
	hosts := []Host{{Name: "dev", IP: "10.213.77.5", HostKeys: []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE0"}}, {Name: "stopped"}}
	if err := WriteKnownHosts(f, hosts); err != nil {
		t.Fatal(err)
	}
	if err := WriteConfig(f, hosts); err != nil {
		t.Fatal(err)
	}
	if kh, _ := os.ReadFile(f.KnownHosts); !strings.Contains(string(kh), "dev.banger,dev,10.213.77.5 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE0\n") {
		t.Fatalf("known_hosts:\n%s", kh)
	}
	for host, want := range map[string][]string{
		"dev.banger":   {"hostname 10.213.77.5", "hostkeyalias dev.banger", "stricthostkeychecking true", "user root"},
		"dev":          {"hostname 10.213.77.5", "hostkeyalias dev.banger"},
		"other.banger": {"hostname other.banger", "stricthostkeychecking true", "userknownhostsfile " + f.KnownHosts},
	} {
		out, err := exec.Command(sshBin, "-G", "-F", f.Config, host).CombinedOutput()
		if err != nil {
			t.Fatalf("ssh -G %s: %v\n%s", host, err, out)
		}
		for _, w := range want {
			if !strings.Contains(string(out), w+"\n") {
				t.Errorf("ssh -G %s lacks %q", host, w)
			}
		}
		if !strings.Contains(string(out), "identityfile "+f.Key+"\n") {
			t.Errorf("ssh -G %s does not use banger's key", host)
		}
	}
}

// sshServer serves SSH handshakes on 127.0.0.1 with a host key that can be
// swapped, like a guest whose keys were regenerated.
type sshServer struct {
	mu  sync.Mutex
	key ssh.Signer
	ln  net.Listener
}

func newSSHServer(t *testing.T) *sshServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &sshServer{ln: ln}
	s.rotate(t)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			cfg := &ssh.ServerConfig{NoClientAuth: false, PublicKeyCallback: func(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error) {
				return nil, errors.New("no")
			}}
			cfg.AddHostKey(s.key)
			s.mu.Unlock()
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				_, _, _, _ = ssh.NewServerConn(c, cfg)
			}()
		}
	}()
	return s
}

func (s *sshServer) rotate(t *testing.T) ssh.PublicKey {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.key = signer
	s.mu.Unlock()
	return signer.PublicKey()
}

func TestProbePinsThenRefusesAChangedKey(t *testing.T) {
	srv := newSSHServer(t)
	var pinned string
	pin := func(k ssh.PublicKey) error {
		if pinned == "" {
			pinned = AuthorizedForm(k)
			return nil
		}
		if AuthorizedForm(k) != pinned {
			return &HostKeyChangedError{VM: "dev", Algorithm: k.Type()}
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	first := srv.key.PublicKey()
	if err := Probe(ctx, srv.ln.Addr().String(), pin); err != nil {
		t.Fatal(err)
	}
	if pinned != AuthorizedForm(first) {
		t.Fatalf("pinned %q, server key %q", pinned, AuthorizedForm(first))
	}
	if err := Probe(ctx, srv.ln.Addr().String(), pin); err != nil {
		t.Fatalf("same key refused: %v", err)
	}
	srv.rotate(t)
	err := Probe(ctx, srv.ln.Addr().String(), pin)
	if !errors.Is(err, ErrHostKeyChanged) || !strings.Contains(err.Error(), "banger vm ssh --forget-host-key dev") {
		t.Fatalf("changed key: %v", err)
	}
}

func TestProbeGivesUpOnAClosedPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = Probe(ctx, addr, func(ssh.PublicKey) error { t.Fatal("no key to pin"); return nil })
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Fatalf("probe of a closed port: %v after %s", err, time.Since(start))
	}
}
