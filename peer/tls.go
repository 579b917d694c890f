package peer

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"

	"github.com/lvhook/lvhook/config"
	"github.com/rs/zerolog"
)

// Credentials are this host's TLS identity and the cluster's CA.
type Credentials struct {
	Cert tls.Certificate
	CA   *x509.CertPool
}

// LoadCredentials reads a PEM CA bundle, certificate and key (libvirt's PKI
// files by default, see config.Default).
func LoadCredentials(caFile, certFile, keyFile string) (*Credentials, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("peer TLS: CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("peer TLS: %s holds no PEM certificate", caFile)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("peer TLS: certificate %s and key %s: %w", certFile, keyFile, err)
	}
	return &Credentials{Cert: cert, CA: pool}, nil
}

// verifyChain checks a presented chain against the CA for one usage, which
// the certificate must list itself: x509's check alone lets a certificate
// without the extension, or with anyExtendedKeyUsage, serve any use. Go's
// host name check is not used: a peer is matched by name or by address
// (certMatches).
func verifyChain(certs []*x509.Certificate, ca *x509.CertPool, usage x509.ExtKeyUsage) (*x509.Certificate, error) {
	if len(certs) == 0 {
		return nil, errors.New("no certificate presented")
	}
	leaf := certs[0]
	if !slices.Contains(leaf.ExtKeyUsage, usage) {
		return nil, fmt.Errorf("certificate %s is not for %s use (extended key usage)", describeCert(leaf), usageName(usage))
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return nil, err
	}
	return leaf, nil
}

func usageName(u x509.ExtKeyUsage) string {
	if u == x509.ExtKeyUsageServerAuth {
		return "serverAuth"
	}
	return "clientAuth"
}

// certMatches reports whether the subject alternative names of c include id,
// a DNS name (exactly, in any case) or an IP address. The Common Name does
// not count: it is no host name for TLS (RFC 6125, and Go since 1.15), and
// CAs that check the names they sign check the SANs.
func certMatches(c *x509.Certificate, id string) bool {
	if ip := net.ParseIP(strings.Trim(id, "[]")); ip != nil {
		return slices.ContainsFunc(c.IPAddresses, ip.Equal)
	}
	id = strings.TrimSuffix(id, ".")
	return id != "" && slices.ContainsFunc(c.DNSNames, func(n string) bool {
		return strings.EqualFold(strings.TrimSuffix(n, "."), id)
	})
}

// peerIDs are what a peer's certificate may name it by: its configured name
// and the host of its address.
func peerIDs(p config.Peer) []string {
	ids := []string{p.Name}
	host := p.Address
	if h, _, err := net.SplitHostPort(p.Address); err == nil {
		host = h
	}
	if host = strings.Trim(host, "[]"); host != "" && !strings.EqualFold(host, p.Name) {
		ids = append(ids, host)
	}
	return ids
}

// describeCert renders a certificate's names for a log line or an error.
func describeCert(c *x509.Certificate) string {
	return fmt.Sprintf("CN=%q DNS=%q IP=%v", c.Subject.CommonName, c.DNSNames, c.IPAddresses)
}

// NameOf returns the configured peer a certificate names, if any.
func NameOf(c *x509.Certificate, peers []config.Peer) (string, bool) {
	for _, p := range peers {
		if slices.ContainsFunc(peerIDs(p), func(id string) bool { return certMatches(c, id) }) {
			return p.Name, true
		}
	}
	return "", false
}

// ServerTLS is the peer server's TLS configuration: a client certificate is
// required, signed by the CA for client use and naming a configured peer;
// anything else fails the handshake.
func ServerTLS(cr *Credentials, peers []config.Peer, log zerolog.Logger) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cr.Cert},
		ClientAuth:   tls.RequireAnyClientCert,
		NextProtos:   []string{"http/1.1"},
		VerifyConnection: func(cs tls.ConnectionState) error {
			c, err := verifyChain(cs.PeerCertificates, cr.CA, x509.ExtKeyUsageClientAuth)
			if err != nil {
				log.Warn().Err(err).Msg("peer certificate refused")
				return err
			}
			if _, ok := NameOf(c, peers); !ok {
				err := fmt.Errorf("certificate %s names no configured peer in its subject alternative names", describeCert(c))
				log.Warn().Err(err).Msg("peer certificate refused")
				return err
			}
			return nil
		},
	}
}

// clientTLS is the configuration to reach peer: its server certificate must
// be signed by the CA for server use and name it, by name or address.
func clientTLS(cr *Credentials, peer config.Peer) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cr.Cert},
		ServerName:   peer.Name,
		NextProtos:   []string{"http/1.1"},
		// Verified in VerifyConnection, which accepts the peer's name or
		// its address.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			c, err := verifyChain(cs.PeerCertificates, cr.CA, x509.ExtKeyUsageServerAuth)
			if err != nil {
				return err
			}
			ids := peerIDs(peer)
			if slices.ContainsFunc(ids, func(id string) bool { return certMatches(c, id) }) {
				return nil
			}
			return fmt.Errorf("server certificate %s names neither %s in its subject alternative names", describeCert(c), strings.Join(ids, " nor "))
		},
	}
}
