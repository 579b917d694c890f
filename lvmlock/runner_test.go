package lvmlock

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets TestCommandDiesWithItsCaller run this test binary as the
// caller that gets killed.
func TestMain(m *testing.M) {
	if pidFile := os.Getenv("LVHOOK_TEST_RUNNER_CHILD"); pidFile != "" {
		// A command that would outlive us if nothing killed it.
		_, _, _ = ExecRunner{}.Run(context.Background(), "sh", "-c", "echo $$ > "+pidFile+"; exec sleep 60")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestCommandDiesWithItsCaller: a hook killed with SIGKILL (or exiting at
// its hard timeout) takes its lvm command with it, so an lvchange cannot
// activate an LV after the hook is gone (found by review: the orphaned
// lvchange activated the LV 3.5 s after the hook died).
func TestCommandDiesWithItsCaller(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	caller := exec.Command(os.Args[0], "-test.run=^$")
	caller.Env = append(os.Environ(), "LVHOOK_TEST_RUNNER_CHILD="+pidFile)
	if err := caller.Start(); err != nil {
		t.Fatal(err)
	}
	var pid int
	for deadline := time.Now().Add(10 * time.Second); pid == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			_ = caller.Process.Kill()
			t.Fatal("the command did not start within 10 s")
		}
		if data, err := os.ReadFile(pidFile); err == nil && strings.HasSuffix(string(data), "\n") {
			pid, _ = strconv.Atoi(strings.TrimSpace(string(data)))
		}
	}
	if err := caller.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = caller.Wait()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if syscall.Kill(pid, 0) != nil || zombie(pid) {
			return
		}
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("command %d still runs 10 s after its caller was killed", pid)
		}
	}
}

// zombie tells a process that has died but not been reaped (its parent is
// gone, so init reaps it in its own time).
func zombie(pid int) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	_, rest, _ := strings.Cut(string(data), ") ")
	return strings.HasPrefix(rest, "Z")
}
