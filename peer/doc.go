// Package peer is the channel between the hosts' lock helpers: JSON over
// HTTPS with mutual TLS, each host known by its certificate.
//
//	wire.go      every path, request and answer
//	validate.go  the rules a request passes before any of it reaches libvirt or lvm
//	tls.go       credentials, certificate checks, the server's and client's TLS
//	client.go    HTTPSTransport: one request to one peer
//	server.go    Server: authenticates, bounds and logs; a Service decides
//	handover.go  Handover: the destination's side of a live migration
//	holders.go   Holders: who else holds an LV, for `lvhook check`
//
// `lvhook evacuate` asks each peer's capacity (CapacityPath) with
// HTTPSTransport.AskCapacity.
//
// The decisions themselves (may this host hand its locks over?) are the
// lock helper's, in package migration, which implements Service.
package peer
