package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"testing"

	"github.com/bangerdev/banger/internal/api"
)

// Wrap gives a code without losing the chain in-process; only code and
// message cross the wire.
func TestWrapKeepsChain(t *testing.T) {
	cause := fmt.Errorf("open /x: %w", fs.ErrNotExist)
	err := api.Wrap(api.CodeNotFound, fmt.Errorf("copy out: %w", cause))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("errors.Is lost the cause")
	}
	if api.CodeOf(err) != api.CodeNotFound || !errors.Is(err, &api.Error{Code: api.CodeNotFound}) {
		t.Fatalf("code = %s", api.CodeOf(err))
	}
	if err.Error() != "copy out: open /x: file does not exist" {
		t.Fatalf("message = %q", err.Error())
	}
	b, jerr := json.Marshal(err)
	if jerr != nil || string(b) != `{"code":"not_found","message":"copy out: open /x: file does not exist"}` {
		t.Fatalf("wire form = %s, %v", b, jerr)
	}
	var back api.Error
	if err := json.Unmarshal(b, &back); err != nil || back.Unwrap() != nil || back.Code != api.CodeNotFound {
		t.Fatalf("decoded = %+v, %v", back, err)
	}
	if api.Wrap(api.CodeInternal, nil) != nil {
		t.Fatal("Wrap(nil) is not nil")
	}
	// Wrapped further, the code is still found.
	outer := fmt.Errorf("vm.cp: %w", api.Wrap(api.CodeCanceled, context.Canceled))
	if api.CodeOf(outer) != api.CodeCanceled || !errors.Is(outer, context.Canceled) {
		t.Fatalf("outer: code %s", api.CodeOf(outer))
	}
}

// vm.exec's one result type keeps the two wire forms it had: ExecResult,
// or SessionStarted with Detach; each decodes back to what was sent.
func TestVMExecResultWireForms(t *testing.T) {
	for _, tc := range []struct {
		res  api.VMExecResult
		wire string
	}{
		{api.VMExecResult{ExitCode: 3}, `{"exit_code":3}`},
		{api.VMExecResult{}, `{"exit_code":0}`},
		{api.VMExecResult{Session: &api.SessionStarted{ID: "00112233aabbccdd", PID: 42}}, `{"id":"00112233aabbccdd","pid":42}`},
	} {
		b, err := json.Marshal(tc.res)
		if err != nil || string(b) != tc.wire {
			t.Errorf("%+v marshals to %s, %v; want %s", tc.res, b, err, tc.wire)
		}
		var back api.VMExecResult
		if err := json.Unmarshal([]byte(tc.wire), &back); err != nil {
			t.Fatal(err)
		}
		if back.ExitCode != tc.res.ExitCode || (back.Session == nil) != (tc.res.Session == nil) ||
			(back.Session != nil && *back.Session != *tc.res.Session) {
			t.Errorf("%s decodes to %+v, want %+v", tc.wire, back, tc.res)
		}
	}
}
