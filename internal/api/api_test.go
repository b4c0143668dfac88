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
