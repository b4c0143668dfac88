// Package policy is the one place that decides what a VM may expose and
// reach: which guest listeners `vm ports` reports and how, which guest
// ports `vm forward` and published ports may carry, and which
// destinations the host drops for a VM's traffic. It is pure: no I/O, no
// clock, so every rule is table-tested.
//
// Callers: the daemon's vm.ports (Report) and vm.forward (Forwardable),
// netattach (Egress, sent with the tap), the root helper and hostnat
// (CheckEgress before any rule is written, Metadata for the global drop).
// Auto-forward is meant to call Report and Forwardable for each new
// listener and forward only those both allow.
package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"path"
	"slices"
	"strings"

	"github.com/bangerdev/banger/internal/model"
)

// MaxEgress bounds a VM's denied destinations: each is a rule on the
// host, and the list crosses into the root helper.
const MaxEgress = 64

// MaxForwardDeny bounds a VM's denied forward ports.
const MaxForwardDeny = 64

// AgentProgram is the guest agent's argv[0] (guestinit starts the server
// under it; the image-init unit runs a file of that name), and
// AgentCommand its /proc/PID/comm when the file itself has that name (the
// kernel keeps 15 bytes).
const (
	AgentProgram = "banger-vsock-agent"
	AgentCommand = "banger-vsock-ag"
)

// Labels Report puts on a visible listener.
const (
	// LabelLoopbackOnly: bound to 127.0.0.0/8 or ::1. Nothing reaches it
	// through the tap, but `vm forward` does (the agent dials it from inside
	// the guest), so it is reported and forwardable.
	LabelLoopbackOnly = "loopback-only"
	// LabelForwardDenied: the VM's policy refuses `vm forward` to this port.
	LabelForwardDenied = "forward-denied"
)

// Rules a refusal names.
const (
	RuleForwardDeny = "forward-deny"
	RuleMetadata    = "metadata"
	RuleGuestOnly   = "guest-only"
)

// ErrDenied is wrapped by every refusal (a *Denied).
var ErrDenied = errors.New("denied by vm policy")

// Denied says which rule refused what and how to change it.
type Denied struct {
	Rule string // RuleForwardDeny, RuleGuestOnly, RuleMetadata
	What string // e.g. "port 5432"
	Hint string // how to override
}

func (d *Denied) Error() string {
	s := fmt.Sprintf("%s is denied by the vm's %s rule", d.What, d.Rule)
	if d.Hint != "" {
		s += ": " + d.Hint
	}
	return s
}

func (d *Denied) Unwrap() error { return ErrDenied }

// Metadata is 169.254.0.0/16, always denied: on cloud hosts
// 169.254.169.254 is the instance metadata service, which hands out the
// host's credentials, and nothing a guest needs lives there.
func Metadata() netip.Prefix { return netip.PrefixFrom(netip.AddrFrom4([4]byte{169, 254, 0, 0}), 16) }

// PrivateRanges are the destinations --deny-private adds: RFC 1918 and the
// shared address space (RFC 6598), i.e. the host's LAN and carrier NAT.
// The VM's own subnet stays reachable (hostnat accepts it first).
func PrivateRanges() []netip.Prefix {
	return []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("172.16.0.0/12"),
		netip.MustParsePrefix("192.168.0.0/16"),
		netip.MustParsePrefix("100.64.0.0/10"),
	}
}

// VM is one VM's parsed policy.
type VM struct {
	Name        string     // for messages
	Addr        netip.Addr // the guest's own address, if it has one
	DenyEgress  []netip.Prefix
	DenyPrivate bool
	ForwardDeny []int
}

// FromModel parses a stored VM's policy; every field was validated on the way
// in, so an error here means a damaged row.
func FromModel(vm model.VM) (VM, error) {
	name, p := vm.Name, vm.Policy
	pre, err := ParsePrefixes(p.DenyEgress)
	if err != nil {
		return VM{}, fmt.Errorf("policy of vm %q: %w", name, err)
	}
	if err := checkPorts(p.ForwardDeny); err != nil {
		return VM{}, fmt.Errorf("policy of vm %q: %w", name, err)
	}
	addr, _ := netip.ParseAddr(vm.IP) // no lease: loopback only
	return VM{Name: name, Addr: addr, DenyEgress: pre, DenyPrivate: p.DenyPrivate, ForwardDeny: p.ForwardDeny}, nil
}

// Normalize checks and canonicalises a policy given by a user (flags or
// config): prefixes masked and de-duplicated, ports sorted and unique. A
// prefix with host bits set is refused rather than silently widened.
func Normalize(p model.VMPolicy) (model.VMPolicy, error) {
	pre, err := ParsePrefixes(p.DenyEgress)
	if err != nil {
		return model.VMPolicy{}, err
	}
	if err := checkPorts(p.ForwardDeny); err != nil {
		return model.VMPolicy{}, err
	}
	out := model.VMPolicy{DenyPrivate: p.DenyPrivate}
	for _, q := range pre {
		out.DenyEgress = append(out.DenyEgress, q.String())
	}
	out.ForwardDeny = slices.Compact(slices.Sorted(slices.Values(p.ForwardDeny)))
	return out, nil
}

// Merge adds b's denials to a's (config defaults plus create flags): a
// per-VM override can only deny more.
func Merge(a, b model.VMPolicy) model.VMPolicy {
	return model.VMPolicy{
		DenyEgress:  append(slices.Clone(a.DenyEgress), b.DenyEgress...),
		DenyPrivate: a.DenyPrivate || b.DenyPrivate,
		ForwardDeny: append(slices.Clone(a.ForwardDeny), b.ForwardDeny...),
	}
}

// ParsePrefixes parses IPv4 CIDRs (a bare address is a /32), refusing
// IPv6 (guests have none), host bits and more than MaxEgress entries; the
// result is de-duplicated in input order.
func ParsePrefixes(in []string) ([]netip.Prefix, error) {
	if len(in) > MaxEgress {
		return nil, fmt.Errorf("%d denied destinations: at most %d", len(in), MaxEgress)
	}
	var out []netip.Prefix
	for _, s := range in {
		p, err := parsePrefix(s)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out, nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	shown := s
	if len(shown) > 64 {
		shown = shown[:64] + "…"
	}
	shown = strings.ToValidUTF8(shown, "?")
	var p netip.Prefix
	var err error
	if strings.Contains(s, "/") {
		p, err = netip.ParsePrefix(s)
	} else {
		var a netip.Addr
		a, err = netip.ParseAddr(s)
		if err == nil {
			p = netip.PrefixFrom(a, a.BitLen())
		}
	}
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("denied destination %q is not an IPv4 CIDR (want e.g. 192.168.0.0/16)", shown)
	}
	if !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("denied destination %q is not IPv4 (guests have no IPv6: it is always dropped)", shown)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("denied destination %q has host bits set: did you mean %s", shown, p.Masked())
	}
	return p, nil
}

func checkPorts(ports []int) error {
	if len(ports) > MaxForwardDeny {
		return fmt.Errorf("%d denied forward ports: at most %d", len(ports), MaxForwardDeny)
	}
	for _, p := range ports {
		if p < 1 || p > 65535 {
			return fmt.Errorf("denied forward port %d is not within 1..65535", p)
		}
	}
	return nil
}

// Egress lists the destinations the host drops for this VM's traffic, in
// rule order: Metadata first (always), the private ranges when
// DenyPrivate, then DenyEgress; no duplicates. hostnat writes one drop per
// prefix, after accepting the VM's own subnet (the gateway: SSH, DNS) and
// before accepting the rest; when 0.0.0.0/0 is denied the subnet is not
// accepted either, so the VM reaches nothing over IP. Other guests are the network mode's business
// (the bridge table's isolation chain), not a prefix here.
func (v VM) Egress() []netip.Prefix {
	out := []netip.Prefix{Metadata()}
	add := func(p netip.Prefix) {
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	if v.DenyPrivate {
		for _, p := range PrivateRanges() {
			add(p)
		}
	}
	for _, p := range v.DenyEgress {
		add(p)
	}
	return out
}

// CheckEgress is what the root helper and hostnat accept as a VM's egress
// list: at most MaxEgress+len(PrivateRanges())+1 masked IPv4 prefixes,
// one of which covers all of Metadata. A list without the metadata drop is
// refused: no caller may lift it.
func CheckEgress(list []netip.Prefix) error {
	if n := MaxEgress + len(PrivateRanges()) + 1; len(list) > n {
		return fmt.Errorf("%d denied destinations: at most %d", len(list), n)
	}
	covered := false
	for _, p := range list {
		if !p.IsValid() || !p.Addr().Is4() || p.Masked() != p {
			return fmt.Errorf("denied destination %s is not a masked IPv4 prefix", p)
		}
		if p.Bits() <= Metadata().Bits() && p.Contains(Metadata().Addr()) {
			covered = true
		}
	}
	if !covered {
		return &Denied{Rule: RuleMetadata, What: "an egress list without " + Metadata().String(),
			Hint: "the metadata range is always dropped and no policy may lift it"}
	}
	return nil
}

// Listener is one listening socket in a guest, as the agent reports it.
// Every string came from the guest and is hostile.
type Listener struct {
	Proto   string // tcp, tcp6, udp, udp6
	Address string
	Port    int
	PID     int
	Command string // /proc/PID/comm
	Argv0   string // the first word of /proc/PID/cmdline
}

// Report is how vm ports shows one listener.
type Report struct {
	Visible bool
	Labels  []string // LabelLoopbackOnly, LabelForwardDenied
	// Reason says why a hidden listener is hidden (`vm ports --all`).
	Reason string
}

// Report decides whether vm ports lists l and with which labels. The
// agent's own sockets are hidden (banger's plumbing, not the user's
// service); the name comes from the guest, so a guest can hide a socket
// this way, but a guest is root in its VM and could lie to vm ports
// anyway: this is presentation, not a boundary. --all shows them.
func (v VM) Report(l Listener) Report {
	r := Report{Visible: true}
	if l.Command == AgentCommand || path.Base(l.Argv0) == AgentProgram {
		r.Visible, r.Reason = false, "banger's guest agent"
	}
	if a, err := netip.ParseAddr(l.Address); err == nil && a.Unmap().IsLoopback() {
		r.Labels = append(r.Labels, LabelLoopbackOnly)
	}
	if strings.HasPrefix(l.Proto, "tcp") && slices.Contains(v.ForwardDeny, l.Port) {
		r.Labels = append(r.Labels, LabelForwardDenied)
	}
	return r
}

// Forwardable decides whether vm forward may carry a connection to
// host:port in the guest (host is where the agent dials, default the
// guest's loopback). A *Denied names the rule and how to override it.
func (v VM) Forwardable(host netip.Addr, port int) error {
	if port < 1 || port > 65535 {
		return fmt.Errorf("guest port %d is not within 1..65535", port)
	}
	if !host.IsValid() || host.IsUnspecified() || host.IsMulticast() {
		return fmt.Errorf("guest host %s is not a unicast address", host)
	}
	if slices.Contains(v.ForwardDeny, port) {
		return &Denied{Rule: RuleForwardDeny, What: fmt.Sprintf("forwarding port %d of vm %q", port, v.Name),
			Hint: "the vm was created with it in --forward-deny (or config.toml's [policy] forward_deny); create a vm without it to forward this port"}
	}
	h := host.Unmap()
	if h.IsLoopback() || (v.Addr.IsValid() && h == v.Addr) {
		return nil
	}
	// The agent dials from inside the guest: any other address would make
	// vm forward a proxy from the host into whatever the guest can reach.
	return &Denied{Rule: RuleGuestOnly, What: fmt.Sprintf("forwarding to %s through vm %q", h, v.Name),
		Hint: "vm forward reaches the guest's own loopback or address only"}
}
