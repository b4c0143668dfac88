package model

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalidName is wrapped by every name validation failure.
var ErrInvalidName = errors.New("invalid name")

const (
	maxVMNameLen       = 63  // one DNS label: VMs are reachable as NAME.<domain>
	maxArtifactNameLen = 128 // image and kernel names become file names
)

// ValidateVMName checks that name is a DNS label: 1–63 characters of a–z,
// 0–9 and '-', not starting or ending with '-'.
func ValidateVMName(name string) error {
	const allowed = "a vm name is 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'"
	return validateName("vm", name, maxVMNameLen, "-", allowed)
}

// ValidateArtifactName checks an image or kernel name: 1–128 characters of
// a–z, 0–9, '-', '.' and '_', starting and ending with a letter or digit (so
// it is always a safe single path element).
func ValidateArtifactName(name string) error {
	const allowed = "an image or kernel name is 1-128 characters of a-z, 0-9, '-', '.' and '_', starting and ending with a letter or digit"
	return validateName("image or kernel", name, maxArtifactNameLen, "-._", allowed)
}

func validateName(what, name string, maxLen int, punct, allowed string) error {
	fail := func(problem string) error {
		return fmt.Errorf("%w: %s name %q %s: %s", ErrInvalidName, what, name, problem, allowed)
	}
	if name == "" {
		return fmt.Errorf("%w: %s name is empty: %s", ErrInvalidName, what, allowed)
	}
	if len(name) > maxLen {
		return fail(fmt.Sprintf("is %d characters long", len(name)))
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c >= 'A' && c <= 'Z':
			return fail(fmt.Sprintf("has upper-case %q at position %d", c, i+1))
		case strings.IndexByte(punct, c) >= 0:
			if i == 0 || i == len(name)-1 {
				return fail(fmt.Sprintf("starts or ends with %q", c))
			}
		case c < 0x20 || c >= 0x7f:
			return fail(fmt.Sprintf("has byte 0x%02x at position %d", c, i+1))
		default:
			return fail(fmt.Sprintf("has %q at position %d", c, i+1))
		}
	}
	return nil
}
