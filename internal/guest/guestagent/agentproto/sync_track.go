package agentproto

// MaxManifestTok is the most bytes of a token on the wire.
const MaxManifestTok = 64

// ManifestReply is fs.manifest's response line: the token of the listing
// that follows (empty: not tracked), or Unchanged (no entries follow: the
// listing of Since still holds).
type ManifestReply struct {
	Token     string `json:"token,omitempty"`
	Unchanged bool   `json:"unchanged,omitempty"`
}
