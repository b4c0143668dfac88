package api

// VM DNS. The root helper serves it on the bridge address (port 53 needs
// privilege) and answers from a table only the owner daemon writes: the
// helper never reads the owner's store.
var (
	// MethodHelperDNSUpdate (root helper) replaces the whole name table.
	// The helper starts serving as soon as the bridge exists.
	MethodHelperDNSUpdate = Method[DNSUpdate, DNSStatus]{Name: "dns.update"}
)

// DNSUpdate is dns.update's params: every VM name the daemon knows with its
// address. Names are VM names (single DNS labels), addresses inside the
// helper's guest subnet.
type DNSUpdate struct {
	Domain  string      `json:"domain"` // e.g. "banger"
	Records []DNSRecord `json:"records"`
}

// DNSRecord maps a VM name to its IPv4 address.
type DNSRecord struct {
	Name string `json:"name"`
	IP   string `json:"ip"`
}

// DNSStatus is what the helper's VM DNS server is doing.
type DNSStatus struct {
	Serving bool   `json:"serving"`
	Addr    string `json:"addr,omitempty"` // host:port it answers on
	Domain  string `json:"domain"`
	Names   int    `json:"names"`
	// Error says why it is not serving (e.g. no bridge yet, port taken).
	Error string `json:"error,omitempty"`
}

// The owner daemon's network methods pass through to the helper's, adding
// the checks and the DNS status only the daemon has.
var (
	MethodNetworkDown  = Method[NetworkDown, Empty]{Name: "network.down", Tracked: true}
	MethodNetworkState = Method[Empty, NetworkStatus]{Name: "network.state"}
)

// NetworkDown is the owner daemon's network.down params.
type NetworkDown struct {
	// Force tears the network down under running VMs (they lose it).
	Force bool `json:"force,omitempty"`
}

// NetworkStatus is the owner daemon's network.state result: the helper's
// view of the host network plus the last DNS status it reported.
type NetworkStatus struct {
	Network NetworkState `json:"network"`
	DNS     *DNSStatus   `json:"dns,omitempty"` // nil: not pushed yet
}
