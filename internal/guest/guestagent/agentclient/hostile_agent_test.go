package agentclient

import (
	"github.com/bangerdev/banger/internal/guest/guestagent/agenttest"

	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
	"github.com/bangerdev/banger/internal/guest/guestagent/agentserver"
)

// hostileAgent is a compromised guest answering fs.copy_out with whatever
// archive serve writes.
func hostileAgent(t *testing.T, serve func(st *agentproto.Stream)) *Client {
	return hostileMethod(t, agentproto.MethodCopyOut, serve)
}

func TestCopyPathOutFromHostileAgent(t *testing.T) {
	endless := func(st *agentproto.Stream) {
		tw := tar.NewWriter(agentproto.FrameWriter{S: st, T: agentproto.FrameData})
		_ = tw.WriteHeader(&tar.Header{Name: "result.txt", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1 << 40})
		chunk := make([]byte, agentproto.ChunkSize)
		for range (1 << 30) / agentproto.ChunkSize { // bounded: 1 GiB at most, the client stops far earlier
			if _, err := tw.Write(chunk); err != nil {
				return
			}
		}
	}
	cases := []struct {
		name  string
		lim   agentproto.CopyLimits
		serve func(st *agentproto.Stream)
		want  error
	}{
		{"siblings after the asked file", agentproto.CopyLimits{}, func(st *agentproto.Stream) {
			_, _ = agentproto.FrameWriter{S: st, T: agentproto.FrameData}.Write(agenttest.TarOf(t,
				agenttest.Reg("result.txt", 0o644), agenttest.Reg(".bashrc", 0o644), agenttest.Reg(".ssh/authorized_keys", 0o600)))
			_ = st.WriteFrame(agentproto.FrameEOF, nil)
		}, agentproto.ErrUnsafePath},
		{"symlink then write through it", agentproto.CopyLimits{}, func(st *agentproto.Stream) {
			_, _ = agentproto.FrameWriter{S: st, T: agentproto.FrameData}.Write(agenttest.TarOf(t,
				tar.Header{Name: "result.txt/", Typeflag: tar.TypeDir, Mode: 0o755},
				tar.Header{Name: "result.txt/s", Typeflag: tar.TypeSymlink, Linkname: "../.ssh"},
				agenttest.Reg("result.txt/s/authorized_keys", 0o600)))
			_ = st.WriteFrame(agentproto.FrameEOF, nil)
		}, agentproto.ErrUnsafePath},
		{"device", agentproto.CopyLimits{}, func(st *agentproto.Stream) {
			_, _ = agentproto.FrameWriter{S: st, T: agentproto.FrameData}.Write(agenttest.TarOf(t,
				tar.Header{Name: "result.txt", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3, Mode: 0o666}))
			_ = st.WriteFrame(agentproto.FrameEOF, nil)
		}, agentproto.ErrUnsafeEntry},
		{"endless file", agentproto.CopyLimits{MaxBytes: 1 << 20}, endless, agentproto.ErrArchiveLimit},
		{"oversized frame", agentproto.CopyLimits{}, func(st *agentproto.Stream) {
			hdr := []byte{agentproto.FrameData, 0xff, 0xff, 0xff, 0xff}
			_, _ = st.Conn.Write(hdr)
		}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := hostileAgent(t, tc.serve)
			ctx := testCtx(t, 30*time.Second)
			parent, home := agenttest.HostileHome(t)
			before := agenttest.Snapshot(t, parent)
			err := c.CopyPathOut(ctx, "/root/result.txt", home, tc.lim)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if errors.Is(err, io.EOF) {
				t.Fatalf("error hides the cause: %v", err)
			}
			if tc.want != nil && !strings.Contains(err.Error(), "refused the guest's archive of /root/result.txt") {
				t.Errorf("error does not say the guest's archive was refused: %v", err)
			}
			agenttest.SameExcept(t, before, agenttest.Snapshot(t, parent), "")
		})
	}
}

// The same rules hold inside the guest for fs.copy_in, on the real server.
func TestCopyInAppliesTheSameRules(t *testing.T) {
	forEachTransport(t, agentserver.ServerOptions{}, func(t *testing.T, c *Client) {
		ctx := testCtx(t, 30*time.Second)
		parent, home := agenttest.HostileHome(t)
		before := agenttest.Snapshot(t, parent)
		if err := c.CopyIn(ctx, home, "", bytes.NewReader(agenttest.TarOf(t, agenttest.Reg("x", 0o644)))); !errors.Is(err, &agentproto.Error{Code: agentproto.CodeBadRequest}) {
			t.Fatalf("copy in without a name: %v", err)
		}
		err := c.CopyIn(ctx, home, "src", bytes.NewReader(agenttest.TarOf(t, agenttest.Reg("src", 0o4755), agenttest.Reg(".bashrc", 0o644))))
		if err == nil {
			t.Fatal("sibling entry accepted")
		}
		agenttest.SameExcept(t, before, agenttest.Snapshot(t, parent), "")
		agenttest.Must(t, c.CopyIn(ctx, home, "src", bytes.NewReader(agenttest.TarOf(t, agenttest.Reg("src", 0o4755)))))
		if fi, err := os.Stat(filepath.Join(home, "src")); err != nil || fi.Mode() != 0o755 {
			t.Fatalf("set-uid bit kept in the guest: %v %v", fi.Mode(), err)
		}
	})
}
