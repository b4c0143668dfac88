package vmlife

import (
	"context"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
)

// TestCreateRefusesBadPolicy: a policy override that is not valid is
// refused at validation, with what was wrong, and nothing is recorded.
func TestCreateRefusesBadPolicy(t *testing.T) {
	m, st := suspendTestManager(t)
	ctx := context.Background()
	for name, tc := range map[string]struct {
		pol  model.VMPolicy
		want string
	}{
		"host bits":  {model.VMPolicy{DenyEgress: []string{"192.168.1.1/16"}}, "did you mean 192.168.0.0/16"},
		"ipv6":       {model.VMPolicy{DenyEgress: []string{"::/0"}}, "not IPv4"},
		"bad port":   {model.VMPolicy{ForwardDeny: []int{-1}}, "not within 1..65535"},
		"hostile":    {model.VMPolicy{DenyEgress: []string{"1.2.3.0/24\n; flush ruleset"}}, "not an IPv4 CIDR"},
		"many ports": {model.VMPolicy{ForwardDeny: make([]int, 65)}, "at most"},
	} {
		_, err := m.Create(ctx, CreateRequest{Name: "pol", Policy: tc.pol}, nil)
		if api.CodeOf(err) != api.CodeInvalidArgument || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Create = %v, want invalid_argument containing %q", name, err, tc.want)
		}
	}
	// A valid policy passes validation and fails later, on the missing image.
	_, err := m.Create(ctx, CreateRequest{Name: "pol", Policy: model.VMPolicy{DenyEgress: []string{"10.0.0.0/8"}, ForwardDeny: []int{22}}}, nil)
	if api.CodeOf(err) != api.CodeNotFound || !strings.Contains(err.Error(), "image") {
		t.Errorf("valid policy: Create = %v, want the missing image reported", err)
	}
	if vms, err := st.ListVMs(ctx); err != nil || len(vms) != 0 {
		t.Errorf("vms recorded after refused creates: %+v, %v", vms, err)
	}
}
