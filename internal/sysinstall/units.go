package sysinstall

import (
	"bytes"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"text/template"

	"github.com/bangerdev/banger/internal/jailer"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/updater"
)

// Both units use KillMode=process and SendSIGKILL=no: stopping or
// restarting a unit (as `banger update` does) signals only the main
// process, and systemd's final kill never SIGKILLs what is left in the
// unit's cgroup. VMMs do not rely on that alone: the helper moves each one
// into a cgroup of its own (vm.cgroup.adopt), outside every unit.
var (
	helperUnit = template.Must(template.New(updater.HelperUnit).Parse(`# Written by banger system install. Changes are lost on reinstall.
[Unit]
Description=banger root helper (privileged network and VM launch operations)
Documentation=https://github.com/bangerdev/banger
After=network.target

[Service]
Type=simple
Environment=BANGER_HOME={{.Home}}
{{- if .SystemRoot}}
Environment=BANGER_SYSTEM_ROOT={{.SystemRoot}}
{{- end}}
ExecStart={{.Helper}} --owner-uid {{.UID}} --socket {{.HelperSocket}}{{range .HelperArgs}} {{.}}{{end}}
Restart=on-failure
RestartSec=1
KillMode=process
SendSIGKILL=no

[Install]
WantedBy=multi-user.target
`))
	daemonUnit = template.Must(template.New(updater.DaemonUnit).Parse(`# Written by banger system install. Changes are lost on reinstall.
[Unit]
Description=banger owner daemon for {{.User}}
Documentation=https://github.com/bangerdev/banger
Wants={{.HelperUnit}}
After={{.HelperUnit}} network.target

[Service]
Type=simple
User={{.User}}
Group={{.GID}}
Environment=BANGER_HOME={{.Home}}
{{- if .SystemRoot}}
Environment=BANGER_SYSTEM_ROOT={{.SystemRoot}}
{{- end}}
ExecStart={{.Bangerd}}
Restart=on-failure
RestartSec=1
KillMode=process
SendSIGKILL=no
UMask=0077

[Install]
WantedBy=multi-user.target
`))
)

// safeUnitValue keeps unit values free of whitespace, quotes and systemd
// specifiers (%), so rendering needs no escaping.
var (
	safeUnitValue = regexp.MustCompile(`^[A-Za-z0-9/._+-]+$`)
	userName      = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
)

// RenderUnits renders bangerd-root.service and bangerd.service for owner,
// keyed by unit file name. The helper's ExecStart carries network's flags
// and jail's (a zero jail: none, the helper's defaults).
func RenderUnits(sys paths.System, owner Owner, network Network, jail jailer.Config) (map[string][]byte, error) {
	if !userName.MatchString(owner.User) {
		return nil, fmt.Errorf("render units: owner user name %q is not a plain user name", owner.User)
	}
	if owner.UID < 0 || owner.GID < 0 {
		return nil, fmt.Errorf("render units: owner uid/gid %d/%d is negative", owner.UID, owner.GID)
	}
	if err := network.Validate(); err != nil {
		return nil, fmt.Errorf("render units: %w", err)
	}
	if jail != (jailer.Config{}) {
		if err := jail.Validate(); err != nil {
			return nil, fmt.Errorf("render units: %w", err)
		}
	}
	data := struct {
		User, Home, Bangerd, Helper, SystemRoot string
		HelperUnit                              string
		HelperSocket                            string
		UID, GID                                string
		HelperArgs                              []string
	}{
		User: owner.User, Home: sys.Home(), Bangerd: sys.BangerdBin(), Helper: sys.HelperBin(), HelperUnit: updater.HelperUnit,
		HelperSocket: sys.HelperSocket(),
		UID:          strconv.Itoa(owner.UID), GID: strconv.Itoa(owner.GID), HelperArgs: helperMeta(network, jail).HelperArgs(),
	}
	if root := filepath.Clean(sys.Root); root != "/" {
		data.SystemRoot = root
	}
	for _, v := range append([]string{data.Home, data.Bangerd, data.Helper, data.SystemRoot, data.HelperSocket}, data.HelperArgs...) {
		if v != "" && !safeUnitValue.MatchString(v) {
			return nil, fmt.Errorf("render units: value %q has characters a unit file cannot hold unquoted", v)
		}
	}
	out := map[string][]byte{}
	for _, t := range []*template.Template{helperUnit, daemonUnit} {
		var buf bytes.Buffer
		if err := t.Execute(&buf, data); err != nil {
			return nil, fmt.Errorf("render %s: %w", t.Name(), err)
		}
		out[t.Name()] = buf.Bytes()
	}
	return out, nil
}
