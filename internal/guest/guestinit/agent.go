package guestinit

import (
	"fmt"
	"io"
	"os"
)

// VirtioPortOpener returns an opener for the named virtio-serial port, for
// agentserver.Server.ServePort. The guest has no udev, hence no
// /dev/virtio-ports/<name> links: the port is looked up in
// /sys/class/virtio-ports/*/name on every open, so a late probe is fine.
func VirtioPortOpener(name string) func() (io.ReadWriteCloser, error) {
	return virtioPortOpener(sysfs{sysRoot: "/sys", devRoot: "/dev"}, name)
}

func virtioPortOpener(sys sysfs, name string) func() (io.ReadWriteCloser, error) {
	return func() (io.ReadWriteCloser, error) {
		dev, err := sys.agentPort(name)
		if err != nil {
			return nil, err
		}
		f, err := os.OpenFile(dev, os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("open agent port %s: %w", dev, err)
		}
		return f, nil
	}
}
