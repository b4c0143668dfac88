package roothelper

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/rpc"
)

// fuzzParams names a helper method and makes a value of its request type.
type fuzzParams struct {
	method string
	new    func() any
}

func paramsOf[Req, Resp any](m api.Method[Req, Resp]) fuzzParams {
	return fuzzParams{method: m.Name, new: func() any { return new(Req) }}
}

// helperParams is each helper method that takes params, with the type its
// handler decodes them into (from its descriptor; a new helper method with
// params belongs here).
var helperParams = []fuzzParams{
	paramsOf(api.MethodHelperNetworkUp),
	paramsOf(api.MethodHelperNetworkDown),
	paramsOf(api.MethodHelperNetworkState),
	paramsOf(api.MethodHelperTapCreate),
	paramsOf(api.MethodHelperTapDelete),
	paramsOf(api.MethodHelperTapOpen),
	paramsOf(api.MethodHelperDNSUpdate),
	paramsOf(api.MethodHelperImageBuild),
	paramsOf(api.MethodHelperVMCgroupAdopt),
	paramsOf(api.MethodHelperImagePlan),
	paramsOf(api.MethodHelperVMJailerStart),
	paramsOf(api.MethodHelperVMJailerConnect),
	paramsOf(api.MethodHelperVMJailerStop),
}

// FuzzHelperParams feeds hostile params of every helper method (the owner
// uid's requests to root) to the strict decoding the helper's server uses. No panic; a refusal is an
// invalid_argument error; accepted params re-encode to JSON that the same
// strict decoding accepts and decodes to the same value, so nothing the
// helper acts on was dropped or guessed.
func FuzzHelperParams(f *testing.F) {
	for i, s := range []string{
		`{"name":"bgtap0","owner_uid":1000}`,
		`{"name":"bgtap0","owner_uid":1000,"extra":true}`,
		`{"name":"x"} {"name":"y"}`,
		`{"entries":[{"name":"a.vm","ip":"10.0.0.2"}]}`,
		`{"name":"debian-12"}`,
		`null`,
		`{}`,
		`[`,
		`{"name":"\u0000../../etc"}`,
		`{"NAME":"case"}`,
		`{"vm_id":"0123abcd","pid":4242,"start_time":99}`,
		`{"vm_id":"../x","pid":-1,"start_time":18446744073709551615}`,
		`{"base":"debian-bookworm","packages":[{"name":"--root=/","version":"1:2"}]}`,
	} {
		f.Add(uint8(i), []byte(s))
	}
	f.Fuzz(func(t *testing.T, which uint8, params []byte) {
		m := helperParams[int(which)%len(helperParams)]
		v := m.new()
		err := rpc.DecodeParams(m.method, params, v, true)
		if err != nil {
			ae, ok := err.(*api.Error)
			if !ok || ae.Code != api.CodeInvalidArgument {
				t.Fatalf("%s: refusal %v is not invalid_argument", m.method, err)
			}
			return
		}
		raw, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("%s: re-encode accepted params: %v", m.method, err)
		}
		again := m.new()
		if err := rpc.DecodeParams(m.method, raw, again, true); err != nil {
			t.Fatalf("%s: accepted %q but not its re-encoding %s: %v", m.method, params, raw, err)
		}
		if !reflect.DeepEqual(v, again) {
			t.Fatalf("%s: params changed on a round trip: %+v vs %+v", m.method, v, again)
		}
	})
}
