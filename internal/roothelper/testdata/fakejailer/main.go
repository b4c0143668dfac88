// Command fakejailer stands in for Firecracker's jailer in the root
// helper's tests (no firecracker exists on banger's machines). It takes
// the jailer's flags strictly, does what the jailer does that the tests
// can observe (chroot into <base>/<exec name>/<id>/root, drop every group
// and switch to --uid/--gid), then serves HTTP on /api.sock and
// /vsock.sock in the jail: GET /jail describes what it saw (argv, its ids,
// the chroot's files with their sha256 and inode), GET /machine-config,
// PUT and PATCH answer like Firecracker's API and are recorded (GET
// /calls lists them).
package main

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

type file struct {
	Name   string `json:"name"`
	Mode   uint32 `json:"mode"`
	UID    uint32 `json:"uid"`
	GID    uint32 `json:"gid"`
	Ino    uint64 `json:"ino"`
	SHA256 string `json:"sha256,omitempty"`
}

type report struct {
	Argv       []string `json:"argv"`
	UIDBefore  int      `json:"uid_before"`
	UID, EUID  int
	GID, EGID  int
	Groups     []int  `json:"groups"`
	Files      []file `json:"files"`
	CgroupSelf string `json:"cgroup"`
}

func die(format string, a ...any) {
	fmt.Printf("fake-jailer: "+format+"\n", a...)
	os.Exit(2)
}

func main() {
	fmt.Println("fake-jailer: started")
	want := map[string]string{}
	args := os.Args[1:]
	i := 0
	for ; i < len(args) && args[i] != "--"; i += 2 {
		switch args[i] {
		case "--id", "--exec-file", "--uid", "--gid", "--chroot-base-dir", "--cgroup-version":
		default:
			die("unknown flag %q", args[i])
		}
		if i+1 >= len(args) {
			die("flag %s lacks a value", args[i])
		}
		if _, dup := want[args[i]]; dup {
			die("flag %s given twice", args[i])
		}
		want[args[i]] = args[i+1]
	}
	if len(want) != 6 {
		die("want 6 jailer flags, got %v", want)
	}
	if fc := args[i:]; len(fc) != 3 || fc[1] != "--api-sock" || fc[2] != "/api.sock" {
		die("firecracker args %q, want -- --api-sock /api.sock", fc)
	}
	uid, err1 := strconv.Atoi(want["--uid"])
	gid, err2 := strconv.Atoi(want["--gid"])
	if err1 != nil || err2 != nil {
		die("bad --uid/--gid")
	}
	rep := report{Argv: os.Args[1:], UIDBefore: os.Getuid()}
	cg, _ := os.ReadFile("/proc/self/cgroup")
	rep.CgroupSelf = string(cg)
	// The real jailer makes /dev/net/tun in the chroot; the fake opens a
	// few before it chroots, for GET /tap to attach a tap as the jail's uid
	// (the kernel checks the tap's owner when attaching, not when opening).
	var tuns []*os.File
	for range 4 {
		if f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0); err == nil {
			tuns = append(tuns, f)
		}
	}
	root := filepath.Join(want["--chroot-base-dir"], filepath.Base(want["--exec-file"]), want["--id"], "root")
	if err := syscall.Chroot(root); err != nil {
		die("chroot %s: %v", root, err)
	}
	if err := os.Chdir("/"); err != nil {
		die("chdir: %v", err)
	}
	if err := syscall.Setgroups(nil); err != nil {
		die("setgroups: %v", err)
	}
	if err := syscall.Setgid(gid); err != nil {
		die("setgid: %v", err)
	}
	if err := syscall.Setuid(uid); err != nil {
		die("setuid: %v", err)
	}
	rep.UID, rep.EUID, rep.GID, rep.EGID = os.Getuid(), os.Geteuid(), os.Getgid(), os.Getegid()
	rep.Groups, _ = os.Getgroups()
	if b, _ := os.ReadFile("/vmlinux"); strings.HasPrefix(string(b), "FAKE-JAILER-EXIT") {
		time.Sleep(500 * time.Millisecond) // after the helper moved it into its cgroup
		die("told to exit by the kernel file")
	}

	var mu sync.Mutex
	var calls []string
	mux := http.NewServeMux()
	mux.HandleFunc("GET /jail", func(w http.ResponseWriter, r *http.Request) {
		r2 := rep
		r2.Files = listRoot()
		json.NewEncoder(w).Encode(r2)
	})
	// GET /tap?name=X attaches tap X as the jail's uid (then lets it go).
	mux.HandleFunc("GET /tap", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		res := map[string]string{"err": "no /dev/net/tun descriptor left"}
		if len(tuns) > 0 {
			f := tuns[0]
			tuns = tuns[1:]
			res["err"] = attachTap(f, r.URL.Query().Get("name"))
			f.Close()
		}
		json.NewEncoder(w).Encode(res)
	})
	mux.HandleFunc("GET /calls", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		json.NewEncoder(w).Encode(calls)
	})
	mux.HandleFunc("GET /machine-config", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"vcpu_count":2,"mem_size_mib":512,"smt":false}`)
	})
	record := func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<16))
		mu.Lock()
		calls = append(calls, r.Method+" "+r.URL.Path+" "+string(body))
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}
	mux.HandleFunc("PUT /", record)
	mux.HandleFunc("PATCH /", record)
	for _, name := range []string{"/vsock.sock", "/api.sock"} {
		l, err := net.Listen("unix", name)
		if err != nil {
			die("listen %s: %v", name, err)
		}
		go http.Serve(l, mux)
	}
	fmt.Printf("fake-jailer: serving as uid %d gid %d\n", rep.UID, rep.GID)
	select {}
}

// attachTap does what Firecracker does to its tap: TUNSETIFF by name with
// IFF_TAP|IFF_NO_PI|IFF_VNET_HDR. It returns "" on success.
func attachTap(f *os.File, name string) string {
	var ifr [40]byte
	copy(ifr[:16], name)
	binary.NativeEndian.PutUint16(ifr[16:], 0x0002|0x1000|0x4000)
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), 0x400454ca, uintptr(unsafe.Pointer(&ifr[0]))); e != 0 {
		return e.Error()
	}
	return ""
}

func listRoot() []file {
	entries, _ := os.ReadDir("/")
	var out []file
	for _, e := range entries {
		fi, err := os.Lstat("/" + e.Name())
		if err != nil {
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		f := file{Name: e.Name(), Mode: st.Mode, UID: st.Uid, GID: st.Gid, Ino: st.Ino}
		if fi.Mode().IsRegular() {
			if b, err := os.ReadFile("/" + e.Name()); err == nil {
				sum := sha256.Sum256(b)
				f.SHA256 = hex.EncodeToString(sum[:])
			} else {
				f.SHA256 = "unreadable: " + err.Error()
			}
		}
		out = append(out, f)
	}
	return out
}
