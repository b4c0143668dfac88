//go:build !faultinject

package faultinject

import "context"

// Enabled reports whether this binary was built with fault injection.
const Enabled = false

// Pause does nothing in a build without the faultinject tag.
func Pause(context.Context, string) {}
