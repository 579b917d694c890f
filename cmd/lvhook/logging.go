package main

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/rs/zerolog"
	"github.com/rs/zerolog/journald"
)

// newLogger logs to journald, tagged SYSLOG_IDENTIFIER=lvhook, when it is
// available, and to stderr otherwise at minLevelStderr and above. The hook
// passes zerolog.Disabled: libvirt shows its stderr to the operator, which
// must stay one line (set log_level = "debug" to see the records there).
func newLogger(level string, stderr io.Writer, minLevelStderr zerolog.Level) zerolog.Logger {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		lvl = zerolog.InfoLevel
	}
	if journal.Enabled() {
		journald.SendFunc = sendWithFields
		return zerolog.New(journald.NewJournalDWriter()).Level(lvl).With().
			Str("SYSLOG_IDENTIFIER", "lvhook").Logger()
	}
	if lvl == zerolog.DebugLevel || lvl == zerolog.TraceLevel {
		minLevelStderr = lvl
	}
	// The lock helper logs from many goroutines: one record at a time, so
	// lines never interleave, whatever stderr is (found with go test -race:
	// the daemon test's buffer written by the peer server and the helper).
	w := zerolog.SyncWriter(zerolog.ConsoleWriter{Out: stderr, NoColor: true, PartsExclude: []string{zerolog.TimestampFieldName}})
	return zerolog.New(w).Level(max(lvl, minLevelStderr)).With().Str("prog", "lvhook").Logger()
}

// sendWithFields appends the record's fields to the journal MESSAGE, so that
// `journalctl -t lvhook` reads "activated vg=vg0 lv=disk1 from=none to=ex"
// while each field stays queryable (journalctl LV=disk1).
func sendWithFields(msg string, prio journal.Priority, vars map[string]string) error {
	keys := make([]string, 0, len(vars))
	for k := range vars {
		switch k {
		case "JSON", "SYSLOG_IDENTIFIER", "UUID":
			continue
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	b.WriteString(msg)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%s", strings.ToLower(k), vars[k])
	}
	return journal.Send(b.String(), prio, vars)
}
