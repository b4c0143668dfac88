package agentproto

// DefaultVsockPort is the guest port the agent listens on under Firecracker.
const DefaultVsockPort = 1024
