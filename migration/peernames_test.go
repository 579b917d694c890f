package migration

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lvhook/lvhook/config"
	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/peer"
	"github.com/lvhook/lvhook/peer/peertest"
	"github.com/lvhook/lvhook/virt"
)

// post sends body to path on the peer server at addr as the holder of cr,
// and returns the status and the answer.
func post(t *testing.T, addr string, cr *peer.Credentials, path, body string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{cr.Cert}, RootCAs: cr.CA, ServerName: "kvm1", MinVersion: tls.VersionTLS13}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg, DisableKeepAlives: true}}
	resp, err := client.Do(hreq)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	ans, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(ans)
}

// TestServerRefusesInvalidNames: a peer's VG, LV, UUID or domain name that
// is not one lvm or libvirt would use is refused with 400, and nothing runs:
// no lvm command, no libvirt call (rule 5 of the invariant).
func TestServerRefusesInvalidNames(t *testing.T) {
	const cronConfig = `--config=log{file=\"/etc/cron.d/x\" overwrite=1 level=7}`
	tests := []struct {
		name, path, body string
	}{
		{"holders: VG as lvm --config", peer.HoldersPath, `{"lvs":[{"vg":"` + cronConfig + `","lv":"a"}],"timeout_ms":1000}`},
		{"holders: VG as -an", peer.HoldersPath, `{"lvs":[{"vg":"vg0","lv":"a"},{"vg":"-an","lv":"a"}],"timeout_ms":1000}`},
		{"holders: LV with a newline", peer.HoldersPath, `{"lvs":[{"vg":"vg0","lv":"a\n--config=x"}],"timeout_ms":1000}`},
		{"holders: LV ..", peer.HoldersPath, `{"lvs":[{"vg":"vg0","lv":".."}],"timeout_ms":1000}`},
		{"holders: LV with a /", peer.HoldersPath, `{"lvs":[{"vg":"vg0","lv":"../../etc"}],"timeout_ms":1000}`},
		{"holders: empty VG", peer.HoldersPath, `{"lvs":[{"vg":"","lv":"a"}],"timeout_ms":1000}`},
		{"downgrade: VG as -an", peer.DowngradePath, `{"domain":"vm1","uuid":"` + uuid1 + `","lvs":[{"vg":"-an","lv":"a"}],"timeout_ms":1000}`},
		{"downgrade: LV as lvm --config", peer.DowngradePath, `{"domain":"vm1","uuid":"` + uuid1 + `","lvs":[{"vg":"vg0","lv":"` + cronConfig + `"}],"timeout_ms":1000}`},
		{"downgrade: LV ..", peer.DowngradePath, `{"domain":"vm1","uuid":"` + uuid1 + `","lvs":[{"vg":"vg0","lv":".."}],"timeout_ms":1000}`},
		{"downgrade: UUID as -an", peer.DowngradePath, `{"domain":"vm1","uuid":"-an","lvs":[{"vg":"vg0","lv":"a"}],"timeout_ms":1000}`},
		{"downgrade: UUID with a newline", peer.DowngradePath, `{"domain":"vm1","uuid":"` + uuid1 + `\n--config=x","lvs":[{"vg":"vg0","lv":"a"}],"timeout_ms":1000}`},
		{"downgrade: UUID with dashes out of place", peer.DowngradePath, `{"domain":"vm1","uuid":"--` + strings.ReplaceAll(uuid1, "-", "") + `","lvs":[{"vg":"vg0","lv":"a"}],"timeout_ms":1000}`},
		{"downgrade: UUID ..", peer.DowngradePath, `{"domain":"vm1","uuid":"..","lvs":[{"vg":"vg0","lv":"a"}],"timeout_ms":1000}`},
		{"downgrade: domain name with a newline", peer.DowngradePath, `{"domain":"vm1\n--config=x","uuid":"` + uuid1 + `","lvs":[{"vg":"vg0","lv":"a"}],"timeout_ms":1000}`},
		{"downgrade: domain name with a /", peer.DowngradePath, `{"domain":"../vm1","uuid":"` + uuid1 + `","lvs":[{"vg":"vg0","lv":"a"}],"timeout_ms":1000}`},
		{"downgrade: no LV", peer.DowngradePath, `{"domain":"vm1","uuid":"` + uuid1 + `","lvs":[],"timeout_ms":1000}`},
	}
	ca := peertest.NewPKI(t, "cluster CA")
	peers := []config.Peer{{Name: "kvm1"}, {Name: "kvm2"}}
	server := ca.Issue("kvm1", x509.ExtKeyUsageServerAuth, false)
	client := ca.Issue("kvm2", x509.ExtKeyUsageClientAuth, false)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCluster(t, 2)
			src := c.hosts[0]
			src.lv.run("vm1", uuid1, virt.StateRunning, virt.JobMigrationOut, "/dev/vg0/a")
			c.hold(1, "a", lvmlock.ModeEx)
			addr := serve(t, src, server, peers, zerolog.Nop())
			c.lvm.ResetCalls()
			src.lv.ResetCalls()

			code, ans := post(t, addr, client, tc.path, tc.body)
			if code != http.StatusBadRequest {
				t.Errorf("POST %s = %d %s, want 400", tc.path, code, ans)
			}
			if calls := c.lvm.Calls(1); len(calls) != 0 {
				t.Errorf("lvm ran %q, want nothing run", calls)
			}
			if src.lv.Calls() != 0 {
				t.Errorf("libvirt asked %d times, want never", src.lv.Calls())
			}
		})
	}
}

// TestRequestCheck: the names real domains have pass.
func TestRequestCheck(t *testing.T) {
	lvs := []peer.LVRef{{VG: "vg0", LV: "vm1-disk_0.img"}}
	tests := []struct {
		req  peer.Request
		want string // error, "" when accepted
		path string // DowngradePath when empty
	}{
		{peer.Request{Domain: "vm1", UUID: uuid1, LVs: lvs}, "", ""},
		{peer.Request{Domain: "Web server (été) #2", UUID: strings.ToUpper(uuid1), LVs: lvs}, "", ""},
		{peer.Request{Domain: strings.Repeat("v", 251), UUID: uuid1, LVs: lvs}, "", ""},
		{peer.Request{Domain: strings.Repeat("v", 252), UUID: uuid1, LVs: lvs}, `"` + strings.Repeat("v", 252) + `" is not a domain name`, ""},
		{peer.Request{Domain: "vm\t1", UUID: uuid1, LVs: lvs}, `"vm\t1" is not a domain name`, ""},
		{peer.Request{Domain: "vm1", UUID: strings.ReplaceAll(uuid1, "-", ""), LVs: lvs}, `"` + strings.ReplaceAll(uuid1, "-", "") + `" is not a domain UUID`, ""},
		{peer.Request{Domain: "vm1", UUID: uuid1, LVs: make([]peer.LVRef, 1025)}, "1025 LVs, not 1 to 1024", ""},
		{peer.Request{Domain: "vm1", UUID: uuid1, LVs: []peer.LVRef{{VG: "vg0", LV: "-an"}}}, `"-an" is not a valid logical volume name`, ""},
		{peer.Request{Domain: "vm1", UUID: "../../etc/passwd"}, `"../../etc/passwd" is not a domain UUID`, peer.ReservePath},
		{peer.Request{Domain: "vm1", UUID: uuid1}, "", peer.ReservePath},
		{peer.Request{Domain: "vm1", UUID: uuid1, LVs: lvs}, "a reservation names no LVs, this one 1", peer.ReservePath},
	}
	for _, tc := range tests {
		got := ""
		if err := tc.req.Check(cmp.Or(tc.path, peer.DowngradePath)); err != nil {
			got = err.Error()
		}
		if got != tc.want {
			t.Errorf("check(%.60q) = %q, want %q", tc.req.Domain+" "+tc.req.UUID, got, tc.want)
		}
	}
}

// TestHoldsRefusesInvalidNames: the helper itself, whoever calls it, runs
// nothing for a bad name.
func TestHoldsRefusesInvalidNames(t *testing.T) {
	c := newTestCluster(t, 1)
	c.lvm.ResetCalls()
	ans := c.hosts[0].helper.Holds(context.Background(), peer.HoldersRequest{LVs: []peer.LVRef{{VG: "--config=x", LV: "a"}}})
	if !strings.Contains(ans.Error, `"--config=x" is not a valid volume group name`) {
		t.Errorf("Holds() error = %q, want the VG name refused", ans.Error)
	}
	if calls := c.lvm.Calls(1); len(calls) != 0 {
		t.Errorf("lvm ran %q, want nothing run", calls)
	}
}
