package hook

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/lvhook/lvhook/config"
	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/lvmlock/lvmfake"
	"github.com/lvhook/lvhook/state"
)

// eightDisks is a domain with 8 LVs of one shared VG.
func eightDisks() ([]byte, []string) {
	var b strings.Builder
	b.WriteString(`<domain type='kvm'><name>vm8</name><uuid>88888888-1234-4321-8765-888888888888</uuid><devices>`)
	var lvs []string
	for i := range 8 {
		lv := fmt.Sprintf("vm8-disk%d", i)
		lvs = append(lvs, lv)
		fmt.Fprintf(&b, `<disk type='block' device='disk'><driver name='qemu' type='raw' cache='none' io='native'/><source dev='/dev/vg0/%s' index='%d'/><backingStore/><target dev='vd%c' bus='virtio'/><alias name='virtio-disk%d'/></disk>`, lv, i+1, 'a'+i, i)
	}
	b.WriteString(`</devices></domain>`)
	return []byte(b.String()), lvs
}

// BenchmarkHook8Disks measures lvhook's own time for prepare begin and
// release end of an 8-disk one-VG domain against the fake lvm (so without
// lvm's own cost), and reports the lvm invocations and lvchange calls per
// event.
func BenchmarkHook8Disks(b *testing.B) {
	xml, lvs := eightDisks()
	lvm := lvmfake.NewCluster(1)
	lvm.AddVG("vg0", true, lvs...)
	h := &Hook{
		Config: config.Default(),
		LVM:    &lvmlock.Client{Runner: lvm.Host(1), Log: zerolog.Nop()},
		State:  &state.State{Dir: b.TempDir()},
		Log:    zerolog.Nop(),
	}
	ctx := context.Background()
	for _, op := range [][2]string{{"prepare", "begin"}, {"release", "end"}} {
		b.Run(op[0], func(b *testing.B) {
			calls, lvchanges := 0, 0
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				// Bring the LVs to the state the event starts from.
				lvm.Do(func(c *lvmfake.Cluster) {
					for _, lv := range c.VGs["vg0"].LVs {
						if op[0] == "release" {
							lv.Holders[1] = lvmlock.ModeEx
						} else {
							delete(lv.Holders, 1)
						}
					}
				})
				lvm.ResetCalls()
				b.StartTimer()
				if err := h.Run(ctx, Call{Domain: "vm8", Op: op[0], SubOp: op[1]}, xml); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				for _, c := range lvm.Calls(1) {
					calls++
					if strings.HasPrefix(c, "lvchange") {
						lvchanges++
					}
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(calls)/float64(b.N), "lvm-calls/op")
			b.ReportMetric(float64(lvchanges)/float64(b.N), "lvchange/op")
		})
	}
}
