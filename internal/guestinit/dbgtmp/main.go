package main

import (
	"context"
	"fmt"
	"os"

	"github.com/bangerdev/banger/internal/guestconfig"
	"github.com/bangerdev/banger/internal/initramfs"
)

func main() {
	p, _, err := initramfs.Build(context.Background(), initramfs.Inputs{AgentPath: os.Args[1], ModulesDir: os.Args[2], Compression: initramfs.Compression(os.Args[4])}, os.Args[3])
	if err != nil {
		panic(err)
	}
	fmt.Println(p)
	err = guestconfig.Write(os.Args[3]+"/config.disk", &guestconfig.Config{Hostname: "dbg", BootID: "b1", InitMode: "fast", Agent: guestconfig.Agent{Transport: "virtio-serial", PortName: "banger.agent"}})
	if err != nil {
		panic(err)
	}
}
