package peer

import (
	"errors"

	"github.com/lvhook/lvhook/lvmlock"
)

// Paths, requests and answers of the peer channel; validate.go holds the
// rules every request must pass before any of it reaches libvirt or lvm.

// The peer channel: JSON over HTTPS, mutual TLS. A live migration's
// handover is one POST of a Request to ReservePath (the destination's migrate
// begin), then one to DowngradePath (its prepare); the answer is an Answer,
// with status 200 for a decision (granted or not) and 4xx when the request
// itself is refused. HoldersPath is check's read-only question.
const (
	ReservePath   = "/v1/reserve"
	DowngradePath = "/v1/downgrade"
	// DefaultPort is used for a peer address without a port.
	DefaultPort = "16520"
	maxBody     = 1 << 20
)

// HoldersPath is the peer channel's read-only question "which of these LVs
// do you hold, in which mode?", which `lvhook check` asks every peer: lvm
// shows only this host's locks.
const HoldersPath = "/v1/holders"

// Request asks a peer's lock helper to downgrade a domain's LVs to sh for
// the live migration of that domain to the asking host.
type Request struct {
	Domain string  `json:"domain"`
	UUID   string  `json:"uuid"`
	LVs    []LVRef `json:"lvs"`
	// TimeoutMS is how long the asking hook still waits, in milliseconds,
	// when it sends the request. It is relative so that clock skew between
	// hosts cannot stretch or expire it; the server bounds its work by it.
	TimeoutMS int64 `json:"timeout_ms"`
}

// LVRef names an LV on the wire.
type LVRef struct {
	VG string `json:"vg"`
	LV string `json:"lv"`
}

// Answer is a lock helper's decision.
type Answer struct {
	Host    string `json:"host"`
	Granted bool   `json:"granted"`
	Reason  string `json:"reason,omitempty"`
}

// HoldersRequest asks a peer which of LVs it holds.
type HoldersRequest struct {
	LVs       []LVRef `json:"lvs"`
	TimeoutMS int64   `json:"timeout_ms"`
}

// HoldersAnswer is what a peer holds of the LVs asked.
type HoldersAnswer struct {
	Host  string `json:"host"`
	Holds []Hold `json:"holds"`
	// Error is set when the peer could not read its locks.
	Error string `json:"error,omitempty"`
}

// Hold is one LV a peer holds.
type Hold struct {
	VG   string       `json:"vg"`
	LV   string       `json:"lv"`
	Mode lvmlock.Mode `json:"mode"`
}

// CapacityPath is `lvhook evacuate`'s question to a peer's lock helper:
// can your host take domains, and how much memory is free there? Asked of
// every peer before an evacuation; read-only.
const CapacityPath = "/v1/capacity"

// CapacityRequest asks a peer for its capacity.
type CapacityRequest struct {
	TimeoutMS int64 `json:"timeout_ms"`
}

// CapacityAnswer is a peer's capacity, as its lock helper sees it.
type CapacityAnswer struct {
	Host string `json:"host"`
	// LibvirtUp: the lock helper is connected to its libvirtd, which
	// answered for the memory and the domains below.
	LibvirtUp bool `json:"libvirt_up"`
	// FreeMemoryBytes is libvirt's free memory of the host
	// (virNodeGetFreeMemory).
	FreeMemoryBytes int64 `json:"free_memory_bytes"`
	// Draining: the host is evacuating itself and takes no domain.
	Draining bool `json:"draining"`
	// ActiveDomains counts the domains whose QEMU runs there.
	ActiveDomains int `json:"active_domains"`
	// Error says why libvirt could not be read.
	Error string `json:"error,omitempty"`
}

// ErrRefused is what the handover returns (wrapped) when no peer said
// yes within its bound. The prepare is then an ordinary start (the domain's
// own modes, ex): lvmlockd grants sh to any number of hosts, so an -asy
// without the source's yes could join LVs that some host still holds
// shared, while ex is refused as long as any other host holds them.
var ErrRefused = errors.New("no peer agreed to hand its locks over")
