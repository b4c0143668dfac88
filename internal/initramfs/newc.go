package initramfs

import (
	"fmt"
	"io"
)

// newc writes the "new ASCII" (070701) cpio format the kernel unpacks.
// Hand-written because github.com/cavaliergopher/cpio leaves the device and
// rdev fields at zero, so it cannot carry /dev/console (c 5 1).
type newc struct {
	w     io.Writer
	inode int64 // fixed numbering: entries get 1, 2, 3… in write order
	err   error
}

const (
	modeDir  = 0o040000
	modeReg  = 0o100000
	modeChar = 0o020000
)

type cpioEntry struct {
	name         string // relative, no leading slash
	mode         uint32 // type | permissions
	size         int64
	rdevMajor    uint32
	rdevMinor    uint32
	nlink        uint32
	writeContent func(io.Writer) (int64, error)
}

func (c *newc) write(e cpioEntry) {
	if c.err != nil {
		return
	}
	c.inode++
	nlink := e.nlink
	if nlink == 0 {
		nlink = 1
	}
	// uid, gid, mtime, dev major/minor and check are zero: reproducible and
	// owned by root.
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.inode, e.mode, 0, 0, nlink, 0, e.size, 0, 0, e.rdevMajor, e.rdevMinor, len(e.name)+1, 0)
	c.put([]byte(hdr))
	c.put([]byte(e.name + "\x00"))
	c.pad(len(hdr) + len(e.name) + 1)
	if e.size > 0 {
		if c.err != nil {
			return
		}
		n, err := e.writeContent(c.w)
		if err != nil {
			c.err = fmt.Errorf("write %s: %w", e.name, err)
			return
		}
		if n != e.size {
			c.err = fmt.Errorf("write %s: wrote %d bytes, header says %d (file changed while packing)", e.name, n, e.size)
			return
		}
		c.pad(int(e.size % 4))
	}
}

func (c *newc) trailer() error {
	c.inode = -1 // the trailer carries inode 0
	c.write(cpioEntry{name: "TRAILER!!!"})
	return c.err
}

func (c *newc) put(b []byte) {
	if c.err != nil {
		return
	}
	_, c.err = c.w.Write(b)
}

var zeros [4]byte

func (c *newc) pad(n int) {
	if r := n % 4; r != 0 {
		c.put(zeros[:4-r])
	}
}
