package agentserver

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
)

// Socket states in /proc/net/*: TCP_LISTEN, and TCP_CLOSE for an unconnected UDP socket.
const (
	stateListen = "0A"
	stateClose  = "07"
)

// portScanner reads sockets from a procfs; procRoot is "/proc" in the guest.
type portScanner struct {
	procRoot string
}

// sockets lists listening TCP and unconnected bound UDP sockets, without owners.
func (ps portScanner) sockets() ([]agentproto.Port, error) {
	var out []agentproto.Port
	for _, proto := range []string{"tcp", "tcp6", "udp", "udp6"} {
		ports, err := ps.parseNetFile(proto)
		if err != nil {
			return nil, err
		}
		out = append(out, ports...)
	}
	slices.SortFunc(out, func(a, b agentproto.Port) int {
		if c := strings.Compare(a.Proto, b.Proto); c != 0 {
			return c
		}
		if a.Port != b.Port {
			return a.Port - b.Port
		}
		if c := strings.Compare(a.Address, b.Address); c != 0 {
			return c
		}
		return int(a.Inode) - int(b.Inode)
	})
	return out, nil
}

func (ps portScanner) parseNetFile(proto string) ([]agentproto.Port, error) {
	f, err := os.Open(filepath.Join(ps.procRoot, "net", proto))
	if err != nil {
		if os.IsNotExist(err) { // no IPv6 in this kernel
			return nil, nil
		}
		return nil, fmt.Errorf("read socket table: %w", err)
	}
	defer f.Close()
	udp := strings.HasPrefix(proto, "udp")
	var out []agentproto.Port
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 {
			continue
		}
		st := fields[3]
		if (!udp && st != stateListen) || (udp && st != stateClose) {
			continue
		}
		addr, port, err := parseHexAddr(fields[1])
		if err != nil || port == 0 {
			continue
		}
		if udp {
			if _, rport, err := parseHexAddr(fields[2]); err != nil || rport != 0 {
				continue // connected
			}
		}
		inode, err := strconv.ParseUint(fields[9], 10, 64)
		if err != nil || inode == 0 {
			continue
		}
		out = append(out, agentproto.Port{Proto: proto, Address: addr.String(), Port: port, Inode: inode})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read socket table %s: %w", proto, err)
	}
	return out, nil
}

// parseHexAddr decodes "0100007F:1F90": the address is printed as 32-bit
// words in host (little-endian) order, the port in big-endian hex.
func parseHexAddr(s string) (netip.Addr, int, error) {
	h, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.Addr{}, 0, fmt.Errorf("bad socket address %q", s)
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("bad socket port %q", s)
	}
	raw, err := hex.DecodeString(h)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.Addr{}, 0, fmt.Errorf("bad socket address %q", s)
	}
	ip := make([]byte, len(raw))
	for i := 0; i < len(raw); i += 4 {
		binary.LittleEndian.PutUint32(ip[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	addr, _ := netip.AddrFromSlice(ip)
	return addr.Unmap(), int(port), nil
}

// owners fills PID, Command and Cmdline by finding each inode among the
// processes' open descriptors (socket:[inode]); the lowest pid wins.
func (ps portScanner) owners(ports []agentproto.Port) {
	want := map[uint64]bool{}
	for _, p := range ports {
		want[p.Inode] = true
	}
	found := map[uint64]int{}
	entries, _ := os.ReadDir(ps.procRoot)
	pids := make([]int, 0, len(entries))
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	slices.Sort(pids)
	for _, pid := range pids {
		if len(found) == len(want) {
			break
		}
		fdDir := filepath.Join(ps.procRoot, strconv.Itoa(pid), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue // exited, or not ours to read
		}
		for _, fd := range fds {
			link, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if err != nil || !strings.HasPrefix(link, "socket:[") {
				continue
			}
			inode, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]"), 10, 64)
			if err != nil || !want[inode] {
				continue
			}
			if _, ok := found[inode]; !ok {
				found[inode] = pid
			}
		}
	}
	for i := range ports {
		pid, ok := found[ports[i].Inode]
		if !ok {
			continue
		}
		ports[i].PID = pid
		dir := filepath.Join(ps.procRoot, strconv.Itoa(pid))
		if b, err := os.ReadFile(filepath.Join(dir, "comm")); err == nil {
			ports[i].Command = strings.TrimSpace(string(b))
		}
		if b, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil && len(b) > 0 {
			ports[i].Cmdline = strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
		}
	}
}

func sameSocket(a, b agentproto.Port) bool {
	return a.Proto == b.Proto && a.Address == b.Address && a.Port == b.Port && a.Inode == b.Inode
}

// list returns the listening sockets with their owners.
func (ps portScanner) list() ([]agentproto.Port, error) {
	ports, err := ps.sockets()
	if err != nil {
		return nil, err
	}
	ps.owners(ports)
	return ports, nil
}

func (s *Server) scanner() portScanner { return portScanner{procRoot: "/proc"} }

func (s *Server) handlePortsList(_ context.Context, st *agentproto.Stream, _ *slog.Logger, _ json.RawMessage) error {
	ports, err := s.scanner().list()
	if err != nil {
		return fail(st, err)
	}
	if ports == nil {
		ports = []agentproto.Port{}
	}
	return Respond(st, ports)
}

// handlePortsWatch sends a full snapshot frame first and again whenever the
// set of sockets changes, until the host closes the stream.
func (s *Server) handlePortsWatch(ctx context.Context, st *agentproto.Stream, _ *slog.Logger, _ json.RawMessage) error {
	if err := Respond(st, struct{}{}); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		// The host sends nothing; any read result means it has gone.
		_, _ = st.R.ReadByte()
		cancel()
	}()
	ps := s.scanner()
	ticker := time.NewTicker(s.opts.PortsInterval)
	defer ticker.Stop()
	var last []agentproto.Port
	first := true
	for {
		cur, err := ps.sockets()
		if err != nil {
			return failFrame(st, err)
		}
		if first || !slices.EqualFunc(cur, last, sameSocket) {
			first = false
			last = slices.Clone(cur)
			ps.owners(cur)
			if cur == nil {
				cur = []agentproto.Port{}
			}
			if err := st.WriteJSONFrame(agentproto.FrameSnapshot, cur); err != nil {
				return nil // host gone
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}
