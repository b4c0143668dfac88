package roothelper

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/rpc"
)

// The helper's request cap must admit the largest request it accepts: a
// dns.update with maxDNSRecords records of 63-character names, framed as
// the client frames it.
func TestLargestDNSUpdateFitsTheRequestCap(t *testing.T) {
	recs := make([]api.DNSRecord, maxDNSRecords)
	for i := range recs {
		name := fmt.Sprintf("vm%05d-", i)
		recs[i] = api.DNSRecord{Name: name + strings.Repeat("x", 63-len(name)), IP: fmt.Sprintf("100.%d.%d.%d", 100+i%100, 100+(i/100)%100, 100+i%7)}
	}
	params, err := json.Marshal(api.DNSUpdate{Domain: strings.Repeat("d", 63), Records: recs})
	if err != nil {
		t.Fatal(err)
	}
	req, err := json.Marshal(rpc.Request{V: api.Version, Method: api.MethodHelperDNSUpdate.Name, OpID: strings.Repeat("o", 64), Params: params})
	if err != nil {
		t.Fatal(err)
	}
	if len(req) >= MaxRequestBytes {
		t.Fatalf("a full dns.update is %d bytes, over the helper's %d-byte request cap", len(req), MaxRequestBytes)
	}
	t.Logf("largest dns.update: %d bytes of %d allowed", len(req), MaxRequestBytes)
}
