package qemu

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/testutil"
)

func TestDbg(t *testing.T) {
	kernel, _ := testutil.Kernel(t)
	spec := testSpec(t, kernel, testInitrd(t))
	spec.Kernel.Cmdline = "loglevel=7"
	d := newTestDriver(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	inst, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Kill(context.Background(), inst)
	for i := 0; i < 12; i++ {
		time.Sleep(5 * time.Second)
		st, err := d.status(ctx, inst.ControlSocket)
		b, _ := os.ReadFile(inst.ConsoleLog)
		l, _ := os.ReadFile(spec.Dir + "/qemu.log")
		stat, _ := os.ReadFile("/proc/" + strconv.Itoa(inst.PID) + "/stat")
		if i == 11 || len(b) > 0 && i == 1 { t.Logf("%d %+v %v con=%d %s log=%q stat=%s", i, st, err, len(b), b, l, stat[:60]) }
	}
}
