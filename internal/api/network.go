package api

// Root helper methods for banger's host network. The bridge, subnet and
// nftables table are fixed when the helper starts: callers never name them,
// so a caller cannot point the helper at someone else's bridge or table.
var (
	MethodHelperNetworkUp    = Method[Empty, NetworkInfo]{Name: "network.up"} // bridge + forwarding + NAT; idempotent
	MethodHelperNetworkDown  = Method[Empty, Empty]{Name: "network.down"}     // remove table, every banger tap and the bridge
	MethodHelperNetworkState = Method[Empty, NetworkState]{Name: "network.state"}
	MethodHelperTapCreate    = Method[TapCreate, Empty]{Name: "tap.create"} // idempotent for the same owner
	MethodHelperTapDelete    = Method[TapRef, Empty]{Name: "tap.delete"}    // a missing tap is not an error
	// MethodHelperTapOpen opens an existing tap in the helper and passes
	// the descriptor back (rpc SendFile, rpc.InvokeWithFile): for VMMs of
	// an owner that may not open /dev/net/tun itself.
	MethodHelperTapOpen = Method[TapRef, Empty]{Name: "tap.open"}
)

// NetworkInfo is the helper's network config (network.up's result and part
// of network.state's): the daemon leases guest addresses from Subnet.
type NetworkInfo struct {
	Bridge  string `json:"bridge"`
	Subnet  string `json:"subnet"`  // CIDR, e.g. 10.213.77.0/24
	Gateway string `json:"gateway"` // the bridge's address, e.g. 10.213.77.1
	Table   string `json:"table"`   // nftables tables (families inet and bridge)
}

// TapCreate is tap.create's params. A caller other than root may only ask
// for a tap owned by the helper's owner uid and its own gid. MAC and IP are
// the VM's lease: the only source addresses the tap's frames may carry.
type TapCreate struct {
	Name     string `json:"name"` // "bt-" and 1-12 of [a-z0-9]
	OwnerUID int    `json:"owner_uid"`
	OwnerGID int    `json:"owner_gid"`
	MAC      string `json:"mac"` // unicast, e.g. 02:ba:...
	IP       string `json:"ip"`  // a guest address of the subnet
	// Network is NetworkIsolated (default) or NetworkShared.
	Network string `json:"network,omitempty"`
	// DenyEgress is the VM's policy.VM.Egress: IPv4 CIDRs dropped for its
	// traffic. Empty means the default (169.254.0.0/16); a list must cover
	// 169.254.0.0/16, so no caller can lift the metadata drop.
	DenyEgress []string `json:"deny_egress,omitempty"`
}

// VM network modes: an isolated VM reaches the host (and through it the
// outside) only; shared VMs also reach each other.
const (
	NetworkIsolated = "isolated"
	NetworkShared   = "shared"
)

// TapRef is tap.delete's and tap.open's params.
type TapRef struct {
	Name string `json:"name"`
}

// NetworkState is what exists of banger's host network.
type NetworkState struct {
	Config     NetworkInfo         `json:"config"`
	Bridge     *NetworkBridgeState `json:"bridge,omitempty"` // nil: no bridge
	Taps       []NetworkTapState   `json:"taps,omitempty"`
	Forwarding bool                `json:"forwarding"`
	// ForwardingWas is the ip_forward value banger found before turning it
	// on; "" when banger did not change it. `network down` restores it.
	ForwardingWas string `json:"forwarding_was,omitempty"`
	// Chains maps each chain of banger's inet table to its rule count;
	// nil when the table does not exist.
	Chains map[string]int `json:"chains,omitempty"`
	// BridgeChains is the same for the bridge-family (anti-spoofing) table.
	BridgeChains map[string]int `json:"bridge_chains,omitempty"`
	// Changes says in words what banger changed on the host's network.
	Changes []string `json:"changes,omitempty"`
}

// NetworkBridgeState describes the bridge.
type NetworkBridgeState struct {
	Name         string   `json:"name"`
	Up           bool     `json:"up"`
	Addrs        []string `json:"addrs,omitempty"` // CIDR form
	IPv6Disabled bool     `json:"ipv6_disabled"`
}

// NetworkTapState describes one banger tap.
type NetworkTapState struct {
	Name     string `json:"name"`
	OwnerUID uint32 `json:"owner_uid"`
	Up       bool   `json:"up"`
	Master   string `json:"master,omitempty"` // bridge it is attached to
	// SourceRules counts its anti-spoofing rules (0: it can send nothing).
	SourceRules  int  `json:"source_rules"`
	Isolated     bool `json:"isolated"`
	IPv6Disabled bool `json:"ipv6_disabled"`
}
