package flatten

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzApplyLayer applies two fuzzed layers. Whatever they hold, extraction
// must not panic and nothing outside the root may change: neither the
// sandbox beside the root nor a directory that absolute symlinks aim at.
func FuzzApplyLayer(f *testing.F) {
	outsideBase := f.TempDir()
	_, outside, sentinel := sandbox(f, outsideBase)
	for _, tc := range hostileCorpus() {
		layers := tc.layers(f, outside)
		second := []byte{}
		if len(layers) > 1 {
			second = layers[1]
		}
		f.Add(layers[0], second)
	}
	f.Fuzz(func(t *testing.T, l1, l2 []byte) {
		base := t.TempDir()
		root, _, localSentinel := sandbox(t, base)
		before := snapshot(t, base, root)
		farBefore := snapshot(t, outsideBase, "")
		_, _ = applyLayers(root, Options{MaxEntrySize: 1 << 20, MaxTotalSize: 4 << 20, MaxEntries: 2000}, l1, l2)
		sameSnapshot(t, before, snapshot(t, base, root))
		sameSnapshot(t, farBefore, snapshot(t, outsideBase, ""))
		for _, s := range []string{sentinel, localSentinel} {
			if b, err := os.ReadFile(s); err != nil || string(b) != "untouched" {
				t.Fatalf("sentinel %s: %q %v", filepath.Base(filepath.Dir(s)), b, err)
			}
		}
	})
}
