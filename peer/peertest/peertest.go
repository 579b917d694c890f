// Package peertest holds the test PKI and server runner of the peer
// channel's tests, in package peer and in the lock helper's.
package peertest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/lvhook/lvhook/peer"
)

// PKI is a test CA that issues certificates into files, as libvirt's PKI
// recipes lay them out.
type PKI struct {
	t    *testing.T
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	File string
}

func NewPKI(t *testing.T, name string) *PKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	p := &PKI{t: t, dir: t.TempDir(), cert: cert, key: key}
	p.File = p.write("cacert.pem", "CERTIFICATE", der)
	return p
}

func (p *PKI) write(name, typ string, der []byte) string {
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		p.t.Fatal(err)
	}
	return path
}

var serial int64 = 10

// Issue makes a certificate for cn (with cn also as DNS name unless cnOnly)
// for the given usage, and returns its credentials.
func (p *PKI) Issue(cn string, usage x509.ExtKeyUsage, cnOnly bool) *peer.Credentials {
	p.t.Helper()
	c := CertSpec{CN: cn, Usages: []x509.ExtKeyUsage{usage}}
	if !cnOnly {
		c.DNS = []string{cn}
	}
	return p.IssueSpec(c)
}

// CertSpec is what a test certificate says.
type CertSpec struct {
	CN     string
	DNS    []string
	IPs    []string
	Usages []x509.ExtKeyUsage // none: no extended key usage extension
}

// IssueSpec makes the certificate c describes and returns its credentials.
func (p *PKI) IssueSpec(c CertSpec) *peer.Credentials {
	p.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		p.t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: c.CN},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: c.Usages, DNSNames: c.DNS,
	}
	for _, ip := range c.IPs {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		p.t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	base := fmt.Sprintf("cert-%d", serial)
	certFile := p.write(base+".pem", "CERTIFICATE", der)
	keyFile := p.write(base+"-key.pem", "PRIVATE KEY", kder)
	cr, err := peer.LoadCredentials(p.File, certFile, keyFile)
	if err != nil {
		p.t.Fatal(err)
	}
	return cr
}

func (p *PKI) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.cert)
	return pool
}

// SyncBuffer collects log output written from several goroutines.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Serve runs srv on ln with server credentials cr until the test ends or
// stop is called; stop returns what Serve returned.
func Serve(t *testing.T, srv *peer.Server, ln net.Listener, cr *peer.Credentials) (addr string, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln, peer.ServerTLS(cr, srv.Peers, srv.Log)) }()
	stop = sync.OnceValue(func() error {
		cancel()
		return <-done
	})
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String(), stop
}
