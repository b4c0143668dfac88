package agentclient

import (
	"encoding/json"
	"path"
	"slices"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
)

// FuzzManifestBatch feeds arbitrary bytes as a manifest batch: whatever
// checkEntry accepts is a clean, relative name beneath the synced
// directory, which is all the host ever uses a guest name for.
func FuzzManifestBatch(f *testing.F) {
	f.Add([]byte(`[{"p":"a/b","t":"f","s":3,"m":1,"o":420}]`))
	f.Add([]byte(`[{"p":"../etc/passwd","t":"f"}]`))
	f.Add([]byte(`[{"p":"x","t":"l","l":"/etc"}]`))
	f.Add([]byte(`[{"p":"a//b","t":"d"},{"p":"/abs","t":"d"}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var batch []agentproto.ManifestEntry
		if json.Unmarshal(data, &batch) != nil {
			return
		}
		for _, e := range batch {
			if checkEntry(e) != nil {
				continue
			}
			p := e.Path
			if p == "" || p == "." || strings.HasPrefix(p, "/") || path.Clean(p) != p ||
				slices.Contains(strings.Split(p, "/"), "..") || strings.ContainsRune(p, 0) || len(p) > agentproto.MaxEntryName {
				t.Fatalf("accepted unsafe name %q", p)
			}
			if e.Size < 0 || len(e.Link) > agentproto.MaxEntryName {
				t.Fatalf("accepted entry %+v", e)
			}
		}
	})
}
