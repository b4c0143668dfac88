package paths

import "testing"

func TestSystemHomeUsesRootOwnedHelperSocket(t *testing.T) {
	sys := System{Root: "/srv/x"}
	env := map[string]string{EnvHome: "/srv/x/var/lib/banger/home", EnvSystemRoot: "/srv/x"}
	u, err := ResolveUser(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if got, want := u.HelperSocket(), "/srv/x/run/banger/root-helper.sock"; got != want || sys.User().HelperSocket() != want {
		t.Fatalf("system home's helper socket %q (System.User: %q), want %q", got, sys.User().HelperSocket(), want)
	}
	env[EnvHome] = "/home/alice/banger"
	u, err = ResolveUser(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if got, want := u.HelperSocket(), "/home/alice/banger/run/root-helper.sock"; got != want {
		t.Fatalf("private home's helper socket %q, want %q", got, want)
	}
}
