// Package testutil holds the helpers of tests that run real connections
// and goroutines: bounds on calls that could hang, a libvirtd that never
// answers, and a settled goroutine count; and golden files.
package testutil

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// HungLibvirtd listens on a UNIX socket like libvirtd's, accepts every
// connection, reads what it is sent and never answers. closed gets a value
// for each connection the client has closed.
func HungLibvirtd(t *testing.T) (path string, closed <-chan struct{}) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "libvirt-sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan struct{}, 100)
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go func() {
				_, _ = io.Copy(io.Discard, c)
				select {
				case ch <- struct{}{}:
				default:
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return path, ch
}

// Within runs f and fails the test when f has not returned after d: a hung
// call fails the test instead of hanging it.
func Within[T any](t *testing.T, d time.Duration, what string, f func() T) T {
	t.Helper()
	ch := make(chan T, 1)
	go func() { ch <- f() }()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("%s did not return within %s", what, d)
		panic("unreachable")
	}
}

// CloseWithin closes lv, and reports (without stopping the test, which may
// be ending already) a Close that has not returned after 10 s.
func CloseWithin(t *testing.T, lv io.Closer) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- lv.Close() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Errorf("Close did not return within 10 s")
	}
}

// SettleGoroutines waits up to 5 s for the number of goroutines to fall to
// want (goroutines of a closed connection take a moment to end) and returns
// the last count.
func SettleGoroutines(want int) int {
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Golden compares got with the golden file at path, or, with update (a
// test's -update flag), writes got there.
func Golden(t *testing.T, path string, got []byte, update bool) {
	t.Helper()
	if update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run the test with -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", path, diff)
	}
}
