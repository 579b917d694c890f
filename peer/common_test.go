package peer_test

import "github.com/lvhook/lvhook/peer"

const uuid1 = "11111111-2222-4333-8444-555555555551"

// req is a downgrade request for vm1's LVs of vg0.
func req(uuid string, lvs ...string) peer.Request {
	r := peer.Request{Domain: "vm1", UUID: uuid, TimeoutMS: 10000}
	for _, lv := range lvs {
		r.LVs = append(r.LVs, peer.LVRef{VG: "vg0", LV: lv})
	}
	return r
}
