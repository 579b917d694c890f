package main

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/lvhook/lvhook/internal/realdata"
)

// The argv libvirtd gave the hooks on the harness while the test domains
// started and stopped, per release: lvhook, installed beside the 00-trace
// hook that logged them, must take each as a call from libvirt and read it.
func TestRealHookArgv(t *testing.T) {
	realdata.Run(t, func(t *testing.T, r realdata.Release) {
		t.Run("hook-calls-start-destroy.txt", func(t *testing.T) {
			// TIME HOST ARGS... (the arguments as words: 00-trace logs "$*").
			for _, line := range nonEmptyLines(r.Read(t, "hook-calls-start-destroy.txt")) {
				f := strings.Fields(line)
				if len(f) < 5 {
					t.Errorf("%q: want a time, a host and at least 3 arguments", line)
					continue
				}
				checkRealCall(t, f[2:])
			}
		})
		t.Run("hook-argv.txt", func(t *testing.T) {
			for _, line := range nonEmptyLines(r.Read(t, "hook-argv.txt")) {
				argv, err := parseTraceArgv(line)
				if err != nil {
					t.Error(err)
					continue
				}
				if filepath.Base(argv[0]) != "00-trace" || !isHookPath(argv[0]) {
					t.Errorf("%q: argv[0] %q, want a hooks/qemu.d/00-trace", line, argv[0])
					continue
				}
				lvhook := filepath.Join(filepath.Dir(argv[0]), "lvhook")
				args, fromLibvirt, ok := hookInvocation(append([]string{lvhook}, argv[1:]...))
				if !ok || !fromLibvirt || !slices.Equal(args, argv[1:]) {
					t.Errorf("%q: as %s: hookInvocation = %q, from libvirt %v, ok %v", line, lvhook, args, fromLibvirt, ok)
					continue
				}
				checkRealCall(t, args)
			}
		})
	})
}

func checkRealCall(t *testing.T, argv []string) {
	t.Helper()
	c, err := parseHookArgs(argv)
	if err != nil {
		t.Errorf("parseHookArgs(%q): %v", argv, err)
	} else if c.Domain != argv[0] || c.Op != argv[1] || c.SubOp != argv[2] {
		t.Errorf("parseHookArgs(%q) = %+v", argv, c)
	}
}

func nonEmptyLines(data []byte) []string {
	var lines []string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.TrimSpace(l) != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// parseTraceArgv reads a line of the 00-trace hook's argv log:
// "argc=N: [ARG0] [ARG1] ...".
func parseTraceArgv(line string) ([]string, error) {
	n, rest, ok := strings.Cut(strings.TrimPrefix(line, "argc="), ":")
	argc, err := strconv.Atoi(n)
	if !strings.HasPrefix(line, "argc=") || !ok || err != nil {
		return nil, fmt.Errorf("%q: want argc=N: [ARG]...", line)
	}
	var argv []string
	for rest != "" {
		if rest, ok = strings.CutPrefix(rest, " ["); !ok {
			return nil, fmt.Errorf("%q: want [ARG] after %d arguments", line, len(argv))
		}
		end := strings.Index(rest, "] [")
		if end < 0 {
			if !strings.HasSuffix(rest, "]") {
				return nil, fmt.Errorf("%q: argument %d has no ]", line, len(argv))
			}
			end = len(rest) - 1
		}
		argv = append(argv, rest[:end])
		rest = rest[end+1:]
	}
	if len(argv) != argc || argc == 0 {
		return nil, fmt.Errorf("%q: %d arguments, argc=%d", line, len(argv), argc)
	}
	return argv, nil
}

func TestParseTraceArgv(t *testing.T) {
	for line, want := range map[string][]string{
		"argc=5: [/etc/libvirt/hooks/qemu.d/00-trace] [t1] [prepare] [begin] [-]": {"/etc/libvirt/hooks/qemu.d/00-trace", "t1", "prepare", "begin", "-"},
		"argc=3: [/h/qemu.d/00-trace] [a b] []":                                   {"/h/qemu.d/00-trace", "a b", ""},
		"argc=2: [x] [a]b]":                                                       {"x", "a]b"},
		"argc=4: [x] [a]":                                                         nil,
		"argc=1: [x":                                                              nil,
		"argc=0:":                                                                 nil,
		"x t1 prepare":                                                            nil,
		"argc=1:[x]":                                                              nil,
	} {
		got, err := parseTraceArgv(line)
		if !slices.Equal(got, want) || (err == nil) != (want != nil) {
			t.Errorf("parseTraceArgv(%q) = %q, %v; want %q", line, got, err, want)
		}
	}
}
