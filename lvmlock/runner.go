package lvmlock

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// Runner runs one command to completion. Implementations must honour ctx and
// must not let the command inherit the caller's stdout or stderr: libvirt waits
// for EOF on the hook's pipes, so a child holding them would block it forever.
type Runner interface {
	Run(ctx context.Context, name string, args ...string) (stdout, stderr []byte, err error)
}

// ExecRunner runs commands found through PATH (libvirt passes its own PATH to
// hooks) with LC_ALL=C, in a process group of their own that is killed when ctx
// ends or Timeout passes.
type ExecRunner struct {
	// Timeout bounds each command; zero means only ctx bounds it.
	Timeout time.Duration
}

// Run implements Runner. A command that ran and failed returns an *exec.ExitError.
func (r ExecRunner) Run(ctx context.Context, name string, args ...string) ([]byte, []byte, error) {
	if r.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.Timeout)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = commandEnv(os.Environ())
	var stdout, stderr bytes.Buffer
	cmd.Stdin = nil
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	// Pdeathsig: the command dies with the caller, even one killed by
	// SIGKILL or exiting at its hard timeout, so an lvchange can never
	// activate an LV after the hook that asked for it is gone. The kernel
	// sends it when the creating thread exits, so the thread is kept for
	// the command's life.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmd.Cancel = func() error {
		// Kill the whole group so nothing lvm forked outlives the hook.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	if err != nil && ctx.Err() != nil {
		err = errors.Join(ctx.Err(), err)
	}
	return stdout.Bytes(), stderr.Bytes(), err
}

// commandEnv returns env with LC_ALL=C and the lvm message suppression that
// keeps stderr to what lvhook classifies.
func commandEnv(env []string) []string {
	out := make([]string, 0, len(env)+2)
	for _, kv := range env {
		if strings.HasPrefix(kv, "LC_ALL=") || strings.HasPrefix(kv, "LANG=") ||
			strings.HasPrefix(kv, "LVM_SUPPRESS_FD_WARNINGS=") {
			continue
		}
		out = append(out, kv)
	}
	// lvm warns about every inherited file descriptor; libvirt's hooks have none
	// we care about, and the warnings would bury the real error.
	return append(out, "LC_ALL=C", "LVM_SUPPRESS_FD_WARNINGS=1")
}
