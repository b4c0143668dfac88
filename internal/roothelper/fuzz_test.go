package roothelper

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/rpc"
)

// helperParams maps each helper method that takes params to the type its
// handler decodes them into with decodeStrict (kept by hand: a new helper
// method with params belongs here).
var helperParams = []struct {
	method string
	new    func() any
}{
	{api.MethodNetworkUp, func() any { return &api.Empty{} }},
	{api.MethodNetworkDown, func() any { return &api.Empty{} }},
	{api.MethodNetworkState, func() any { return &api.Empty{} }},
	{api.MethodTapCreate, func() any { return &api.TapCreate{} }},
	{api.MethodTapDelete, func() any { return &api.TapRef{} }},
	{api.MethodTapOpen, func() any { return &api.TapRef{} }},
	{api.MethodDNSUpdate, func() any { return &api.DNSUpdate{} }},
	{api.MethodHelperImageBuild, func() any { return &api.HelperImageBuild{} }},
	{api.MethodVMCgroupAdopt, func() any { return &api.VMCgroupAdopt{} }},
	{api.MethodVMJailerStart, func() any { return &api.VMJailerRef{} }},
	{api.MethodVMJailerConnect, func() any { return &api.VMJailerConnect{} }},
	{api.MethodVMJailerStop, func() any { return &api.VMJailerRef{} }},
}

// FuzzHelperParams feeds hostile params of every helper method (the owner
// uid's requests to root) to decodeStrict. No panic; a refusal is an
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
	} {
		f.Add(uint8(i), []byte(s))
	}
	f.Fuzz(func(t *testing.T, which uint8, params []byte) {
		m := helperParams[int(which)%len(helperParams)]
		v := m.new()
		err := decodeStrict(&rpc.Call{Method: m.method, Params: params}, v)
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
		if err := decodeStrict(&rpc.Call{Method: m.method, Params: raw}, again); err != nil {
			t.Fatalf("%s: accepted %q but not its re-encoding %s: %v", m.method, params, raw, err)
		}
		if !reflect.DeepEqual(v, again) {
			t.Fatalf("%s: params changed on a round trip: %+v vs %+v", m.method, v, again)
		}
	})
}
