package debarchive

import "testing"

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"1.0", "1.0", 0},
		{"1.0", "1.1", -1},
		{"1.10", "1.9", 1},
		{"1.0~rc1", "1.0", -1},
		{"1.0~rc1", "1.0~rc2", -1},
		{"1.0~~", "1.0~", -1},
		{"1.0~", "1.0", -1},
		{"1.0", "1.0+b1", -1},
		{"1.0a", "1.0", 1},
		{"1.0a", "1.0+", -1}, // letters sort before non-letters
		{"1:1.0", "2.0", 1},
		{"0:1.0", "1.0", 0},
		{"1.0-1", "1.0-2", -1},
		{"1.0-10", "1.0-9", 1},
		{"1.0-1", "1.0", 1},
		{"2.30-1", "2.3-1", 1},
		{"6.1.192-2", "6.1.176-1", 1},
		{"6.1.76-1", "6.1.158-1", -1},
		{"1.2-3-4", "1.2-3-5", -1}, // revision after the last hyphen
		{"1.001", "1.1", 0},
		{"1.0+dfsg-1", "1.0-1", 1},
		{"7.4.052-1ubuntu3", "7.4.052-1ubuntu3.1", -1},
		{"2:6.1.0", "1:9.9.9", 1},
	}
	for _, tc := range tests {
		if got := CompareVersions(tc.a, tc.b); got != tc.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		if got := CompareVersions(tc.b, tc.a); got != -tc.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", tc.b, tc.a, got, -tc.want)
		}
	}
}

func TestParseDepends(t *testing.T) {
	deps, err := ParseDepends("linux-image-6.1.0-41-cloud-amd64 (= 6.1.158-1), kmod | busybox:any [amd64] <!nocheck>, initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, libc6 (<< 3), old (> 1)")
	if err != nil {
		t.Fatal(err)
	}
	want := [][]Relation{
		{{"linux-image-6.1.0-41-cloud-amd64", "=", "6.1.158-1"}},
		{{"kmod", "", ""}, {"busybox", "", ""}},
		{{"initramfs-tools", ">=", "0.120+deb8u2"}, {"linux-initramfs-tool", "", ""}},
		{{"libc6", "<<", "3"}},
		{{"old", ">=", "1"}},
	}
	if len(deps) != len(want) {
		t.Fatalf("got %d clauses: %+v", len(deps), deps)
	}
	for i := range want {
		if len(deps[i]) != len(want[i]) {
			t.Fatalf("clause %d: got %+v, want %+v", i, deps[i], want[i])
		}
		for j := range want[i] {
			if deps[i][j] != want[i][j] {
				t.Errorf("clause %d alt %d: got %+v, want %+v", i, j, deps[i][j], want[i][j])
			}
		}
	}
	for _, bad := range []string{"foo (= 1.0", "(= 1)", "foo (~ 1)", "foo (>=)"} {
		if _, err := ParseDepends(bad); err == nil {
			t.Errorf("ParseDepends(%q): expected an error", bad)
		}
	}
	r := Relation{Name: "x", Op: "<<", Version: "2.0"}
	if !r.Satisfied("2.0~rc1") || r.Satisfied("2.0") {
		t.Errorf("<< 2.0 should accept 2.0~rc1 and refuse 2.0")
	}
}
