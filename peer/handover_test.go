package peer_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"

	"github.com/lvhook/lvhook/config"
	"github.com/lvhook/lvhook/domxml"
	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/peer"
)

// scriptedTransport answers each peer from a script: one entry per try,
// the last one repeated.
type scriptedTransport struct {
	mu     sync.Mutex
	script map[string][]scripted
	asked  []string
	paths  []string
	// waits: each request's TimeoutMS, in the order sent.
	waits []int64
	// hang: peers that never answer; a request to one waits for its end.
	hang map[string]bool
}

type scripted struct {
	ans peer.Answer
	err error
}

func (s *scriptedTransport) Ask(ctx context.Context, p config.Peer, path string, req peer.Request) (peer.Answer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.asked = append(s.asked, p.Name)
	s.paths = append(s.paths, path)
	s.waits = append(s.waits, req.TimeoutMS)
	if s.hang[p.Name] {
		s.mu.Unlock()
		<-ctx.Done()
		s.mu.Lock()
		return peer.Answer{}, ctx.Err()
	}
	steps := s.script[p.Name]
	r := steps[0]
	if len(steps) > 1 {
		s.script[p.Name] = steps[1:]
	}
	if req.TimeoutMS <= 0 {
		return peer.Answer{}, errors.New("request without deadline")
	}
	return r.ans, r.err
}

var (
	yes     = scripted{ans: peer.Answer{Granted: true}}
	no      = scripted{ans: peer.Answer{Reason: "no outgoing migration job"}}
	refused = scripted{err: errors.New("connection refused")}
)

// TestHandoverReserve: migrate begin asks every other peer; the one with
// the domain migrating out reserves the handover and is returned.
func TestHandoverReserve(t *testing.T) {
	peers := []config.Peer{{Name: "kvm1", HostID: 1}, {Name: "kvm2", HostID: 2}, {Name: "kvm3", HostID: 3}}
	for _, tc := range []struct {
		name   string
		script map[string][]scripted
		source string
		asked  []string // sorted
		reason string
	}{
		{name: "the source says yes", script: map[string][]scripted{"kvm1": {yes}, "kvm3": {no}}, source: "kvm1",
			asked: []string{"kvm1", "kvm3"}},
		{name: "every peer says no: refused at once", script: map[string][]scripted{"kvm1": {no}, "kvm3": {no}},
			asked: []string{"kvm1", "kvm3"}, reason: "kvm1: no outgoing migration job; kvm3: no outgoing migration job"},
		{name: "a lost answer is asked again", script: map[string][]scripted{"kvm1": {refused, refused, yes}, "kvm3": {no}}, source: "kvm1",
			asked: []string{"kvm1", "kvm1", "kvm1", "kvm3"}},
		{name: "a peer down for good: refused within the bound", script: map[string][]scripted{"kvm1": {refused}, "kvm3": {no}},
			reason: "kvm1: connection refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := &scriptedTransport{script: tc.script}
			var slept time.Duration
			ho := &peer.Handover{Self: "kvm2", Peers: peers, Timeout: 10 * time.Second, Transport: tr, Log: zerolog.Nop(),
				Sleep: func(_ context.Context, d time.Duration) error { slept += d; return nil }}
			source, err := ho.Reserve(context.Background(), &domxml.Domain{Name: "vm1", UUID: uuid1}, 0)
			switch {
			case tc.source != "" && (err != nil || source != tc.source):
				t.Fatalf("Reserve() = %q, %v; want %q", source, err, tc.source)
			case tc.source == "" && (!errors.Is(err, peer.ErrRefused) || !strings.Contains(err.Error(), tc.reason)):
				t.Fatalf("Reserve() = %q, %v; want ErrHandoverRefused with %q", source, err, tc.reason)
			}
			if slept > ho.Timeout {
				t.Errorf("paused %s between tries, more than the %s bound", slept, ho.Timeout)
			}
			slices.Sort(tr.asked)
			if diff := cmp.Diff(tc.asked, tr.asked); tc.asked != nil && diff != "" {
				t.Errorf("peers asked (-want +got):\n%s", diff)
			}
			if slices.Contains(tr.asked, "kvm2") {
				t.Errorf("the host asked itself")
			}
			for _, p := range tr.paths {
				if p != peer.ReservePath {
					t.Errorf("Reserve sent %s", p)
				}
			}
		})
	}
}

// count returns how many requests went to each peer.
func (s *scriptedTransport) count() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := map[string]int{}
	for _, p := range s.asked {
		n[p]++
	}
	return n
}

// TestHandoverReserveAsksTheHolderFirst: with the sanlock host_id holding
// the domain's LV, migrate begin asks that peer alone first; the others are
// asked only when it does not say yes, or when the holder names no single
// other peer. Only the source's yes is ever returned.
func TestHandoverReserveAsksTheHolderFirst(t *testing.T) {
	// kvm2 is this host; kvm3 and kvm5 share a host_id (config does not
	// refuse it).
	peers := []config.Peer{{Name: "kvm1", HostID: 1}, {Name: "kvm2", HostID: 2}, {Name: "kvm3", HostID: 3},
		{Name: "kvm4", HostID: 4}, {Name: "kvm5", HostID: 3}}
	all := map[string]int{"kvm1": 1, "kvm3": 1, "kvm4": 1, "kvm5": 1}
	for _, tc := range []struct {
		name   string
		holder int
		script map[string][]scripted
		hang   []string
		source string
		first  string         // the peer asked alone first, if any
		counts map[string]int // requests per peer
		reason string         // of the refusal when source is ""
	}{
		{name: "the holder is the source: one request", holder: 1,
			script: map[string][]scripted{"kvm1": {yes}, "kvm3": {no}, "kvm4": {no}, "kvm5": {no}},
			source: "kvm1", first: "kvm1", counts: map[string]int{"kvm1": 1}},
		{name: "the holder refuses (a stale lease read): the others find the source, the holder is not asked again", holder: 4,
			script: map[string][]scripted{"kvm1": {yes}, "kvm3": {no}, "kvm4": {no}, "kvm5": {no}},
			source: "kvm1", first: "kvm4", counts: all},
		{name: "the holder's answer is lost within its share: asked again with the others", holder: 1,
			script: map[string][]scripted{"kvm1": {refused, refused, refused, refused, refused, yes}, "kvm3": {no}, "kvm4": {no}, "kvm5": {no}},
			source: "kvm1", first: "kvm1", counts: map[string]int{"kvm1": 6, "kvm3": 1, "kvm4": 1, "kvm5": 1}},
		{name: "the holder never answers: it is asked again with the others, within the bound", holder: 4, hang: []string{"kvm4"},
			script: map[string][]scripted{"kvm1": {yes}, "kvm3": {no}, "kvm5": {no}},
			source: "kvm1", first: "kvm4", counts: map[string]int{"kvm1": 1, "kvm3": 1, "kvm4": 2, "kvm5": 1}},
		{name: "the holder never answers and nobody else says yes: refused within the bound", holder: 4, hang: []string{"kvm4"},
			script: map[string][]scripted{"kvm1": {no}, "kvm3": {no}, "kvm5": {no}},
			first:  "kvm4", counts: map[string]int{"kvm1": 1, "kvm3": 1, "kvm4": 2, "kvm5": 1}, reason: "kvm1: no outgoing migration job"},
		{name: "every peer refuses: the holder's reason is kept", holder: 4,
			script: map[string][]scripted{"kvm1": {no}, "kvm3": {no}, "kvm4": {no}, "kvm5": {no}},
			first:  "kvm4", counts: all,
			reason: "kvm1: no outgoing migration job; kvm3: no outgoing migration job; kvm4: no outgoing migration job; kvm5: no outgoing migration job"},
		{name: "the holder is this host: every other peer at once", holder: 2,
			script: map[string][]scripted{"kvm1": {yes}, "kvm3": {no}, "kvm4": {no}, "kvm5": {no}},
			source: "kvm1", counts: all},
		{name: "no peer has the holder's host_id: every peer at once", holder: 9,
			script: map[string][]scripted{"kvm1": {yes}, "kvm3": {no}, "kvm4": {no}, "kvm5": {no}},
			source: "kvm1", counts: all},
		{name: "holder unknown (0): every peer at once", holder: 0,
			script: map[string][]scripted{"kvm1": {yes}, "kvm3": {no}, "kvm4": {no}, "kvm5": {no}},
			source: "kvm1", counts: all},
		{name: "negative holder: every peer at once", holder: -1,
			script: map[string][]scripted{"kvm1": {yes}, "kvm3": {no}, "kvm4": {no}, "kvm5": {no}},
			source: "kvm1", counts: all},
		// kvm5, which shares host_id 3 with kvm3, never answers: had
		// either been asked alone first, kvm5 would be asked twice or
		// kvm1 never.
		{name: "two peers with the holder's host_id: every peer at once", holder: 3, hang: []string{"kvm5"},
			script: map[string][]scripted{"kvm1": {yes}, "kvm3": {no}, "kvm4": {no}},
			source: "kvm1", counts: all},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := &scriptedTransport{script: tc.script, hang: map[string]bool{}}
			for _, p := range tc.hang {
				tr.hang[p] = true
			}
			var mu sync.Mutex
			var slept time.Duration
			timeout := 10 * time.Second
			if tc.hang != nil {
				timeout = 800 * time.Millisecond
			}
			ho := &peer.Handover{Self: "kvm2", Peers: peers, Timeout: timeout, Transport: tr, Log: zerolog.Nop(),
				Sleep: func(_ context.Context, d time.Duration) error {
					mu.Lock()
					defer mu.Unlock()
					slept += d
					return nil
				}}
			start := time.Now()
			source, err := ho.Reserve(context.Background(), &domxml.Domain{Name: "vm1", UUID: uuid1}, tc.holder)
			took := time.Since(start)
			switch {
			case tc.source != "" && (err != nil || source != tc.source):
				t.Fatalf("Reserve(%d) = %q, %v; want %q", tc.holder, source, err, tc.source)
			case tc.source == "" && (!errors.Is(err, peer.ErrRefused) || !strings.Contains(err.Error(), tc.reason)):
				t.Fatalf("Reserve(%d) = %q, %v; want ErrRefused with %q", tc.holder, source, err, tc.reason)
			}
			if diff := cmp.Diff(tc.counts, tr.count()); diff != "" {
				t.Errorf("requests per peer (-want +got):\n%s", diff)
			}
			if tc.first != "" {
				if tr.asked[0] != tc.first {
					t.Errorf("asked %s first, want the holder %s", tr.asked[0], tc.first)
				}
				if quarter := (timeout / 4).Milliseconds(); tr.waits[0] > quarter {
					t.Errorf("the holder was told the hook waits %d ms, more than its share (%d ms)", tr.waits[0], quarter)
				}
			}
			if slept > timeout || took > timeout+500*time.Millisecond {
				t.Errorf("took %s, paused %s between tries: more than the %s bound", took, slept, timeout)
			}
			if slices.Contains(tr.asked, "kvm2") {
				t.Errorf("the host asked itself")
			}
			for _, p := range tr.paths {
				if p != peer.ReservePath {
					t.Errorf("Reserve sent %s", p)
				}
			}
		})
	}
}

// TestHandoverReserveHolderOnlyPeer: when the holder is the only other peer
// and refuses, that answer is final: it is not asked twice.
func TestHandoverReserveHolderOnlyPeer(t *testing.T) {
	tr := &scriptedTransport{script: map[string][]scripted{"kvm1": {no}}}
	ho := &peer.Handover{Self: "kvm2", Peers: []config.Peer{{Name: "kvm1", HostID: 1}, {Name: "kvm2", HostID: 2}},
		Timeout: time.Second, Transport: tr, Log: zerolog.Nop()}
	_, err := ho.Reserve(context.Background(), &domxml.Domain{Name: "vm1", UUID: uuid1}, 1)
	if !errors.Is(err, peer.ErrRefused) || !strings.Contains(err.Error(), "kvm1: no outgoing migration job") {
		t.Errorf("Reserve() = %v, want ErrRefused with kvm1's reason", err)
	}
	if diff := cmp.Diff([]string{"kvm1"}, tr.asked); diff != "" {
		t.Errorf("peers asked (-want +got):\n%s", diff)
	}
}

// TestHandoverDowngradeAsksTheSourceAlone: prepare asks only the peer that
// reserved the handover, and a source that is not a configured peer (a
// marker lvhook did not write) is refused without asking anyone.
func TestHandoverDowngradeAsksTheSourceAlone(t *testing.T) {
	peers := []config.Peer{{Name: "kvm1"}, {Name: "kvm2"}, {Name: "kvm3"}}
	refs := []lvmlock.Ref{{VG: "vg0", LV: "a"}}
	dom := &domxml.Domain{Name: "vm1", UUID: uuid1}
	tr := &scriptedTransport{script: map[string][]scripted{"kvm1": {yes}, "kvm3": {yes}}}
	ho := &peer.Handover{Self: "kvm2", Peers: peers, Timeout: time.Second, Transport: tr, Log: zerolog.Nop()}
	if err := ho.Downgrade(context.Background(), "kvm1", dom, refs); err != nil {
		t.Fatalf("Downgrade(kvm1) = %v", err)
	}
	if diff := cmp.Diff([]string{"kvm1"}, tr.asked); diff != "" {
		t.Errorf("peers asked (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{peer.DowngradePath}, tr.paths); diff != "" {
		t.Errorf("paths (-want +got):\n%s", diff)
	}
	for _, src := range []string{"kvm9", "kvm2", ""} {
		if err := ho.Downgrade(context.Background(), src, dom, refs); !errors.Is(err, peer.ErrRefused) {
			t.Errorf("Downgrade(%q) = %v, want ErrHandoverRefused", src, err)
		}
	}
	if len(tr.asked) != 1 {
		t.Errorf("asked %v, want kvm1 alone", tr.asked)
	}
}

// TestHandoverWithoutPeers: a configuration that names only this host
// refuses rather than trying -asy.
func TestHandoverWithoutPeers(t *testing.T) {
	ho := &peer.Handover{Self: "kvm1", Peers: []config.Peer{{Name: "KVM1"}}, Timeout: time.Second, Transport: &scriptedTransport{}, Log: zerolog.Nop()}
	_, err := ho.Reserve(context.Background(), &domxml.Domain{Name: "vm1", UUID: uuid1}, 0)
	if !errors.Is(err, peer.ErrRefused) {
		t.Errorf("Reserve() = %v, want ErrHandoverRefused", err)
	}
}

// TestHandoverMissingCertificates: TLS files that cannot be read refuse at
// once, with the file named, instead of retrying until the timeout.
func TestHandoverMissingCertificates(t *testing.T) {
	dir := t.TempDir()
	ho := &peer.Handover{Self: "kvm2", Peers: []config.Peer{{Name: "kvm1", Address: "127.0.0.1:1"}}, Timeout: time.Hour, Log: zerolog.Nop(),
		Transport: &peer.HTTPSTransport{Credentials: peer.LazyCredentials(dir+"/cacert.pem", dir+"/clientcert.pem", dir+"/clientkey.pem")},
		Sleep: func(context.Context, time.Duration) error {
			t.Error("asked again after a local failure")
			return nil
		}}
	err := ho.Downgrade(context.Background(), "kvm1", &domxml.Domain{Name: "vm1", UUID: uuid1}, []lvmlock.Ref{{VG: "vg0", LV: "a"}})
	if !errors.Is(err, peer.ErrRefused) || !strings.Contains(err.Error(), dir+"/cacert.pem") {
		t.Errorf("Downgrade() = %v, want ErrHandoverRefused naming the CA file", err)
	}
}
