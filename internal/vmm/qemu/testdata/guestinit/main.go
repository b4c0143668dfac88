// Command guestinit is the /init of the qemu driver's test initramfs: it
// announces itself on the console, then powers the VM off when asked
// (SIGTERM, SIGINT from ctrl-alt-del, SIGPWR).
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	_ = os.MkdirAll("/dev", 0o755)
	_ = syscall.Mount("devtmpfs", "/dev", "devtmpfs", 0, "")
	con, err := os.OpenFile("/dev/console", os.O_WRONLY, 0)
	if err != nil {
		con = os.Stdout
	}
	// Ctrl-alt-del becomes SIGINT to init instead of an immediate reboot.
	_ = syscall.Reboot(syscall.LINUX_REBOOT_CMD_CAD_OFF)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGPWR)
	fmt.Fprintln(con, "TEST-GUEST-READY")
	s := <-sig
	fmt.Fprintf(con, "TEST-GUEST-POWEROFF %v\n", s)
	syscall.Sync()
	_ = syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}
