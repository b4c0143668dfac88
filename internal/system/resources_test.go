package system

import "testing"

func TestVMRSS(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{
		{"Name:\tbangerd\nVmPeak:\t  9000 kB\nVmRSS:\t   1234 kB\nVmData: 5 kB\n", 1234 << 10},
		{"VmRSS:\t1234 MB\n", 0},
		{"VmRSS:\tx kB\n", 0},
		{"Name:\tkthreadd\n", 0},
	} {
		if got := vmRSS([]byte(c.in)); got != c.want {
			t.Errorf("vmRSS(%q) = %d, want %d", c.in, got, c.want)
		}
	}
	if r := Resources(); r.RSSBytes <= 0 || r.FDs <= 0 || r.Goroutines <= 0 {
		t.Errorf("Resources() = %+v: want positive counts for this process", r)
	}
}
