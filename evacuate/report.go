package evacuate

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is what one evacuation did, or would do (dry run); its JSON is
// version 1 (new fields may appear; removing or redefining one changes the
// version).
type Report struct {
	Version     int            `json:"version"`
	Host        string         `json:"host"`
	DryRun      bool           `json:"dry_run"`
	StartedAt   time.Time      `json:"started_at"`
	TookSeconds float64        `json:"took_seconds"`
	Summary     Summary        `json:"summary"`
	Peers       []PeerReport   `json:"peers"`
	Domains     []DomainReport `json:"domains"`
}

// Summary counts the domains; a dry run counts what it would migrate.
type Summary struct {
	Domains     int `json:"domains"`
	Migrated    int `json:"migrated"`
	NotMigrated int `json:"not_migrated"`
}

// PeerReport is a peer as the evacuation found it.
type PeerReport struct {
	Name            string `json:"name"`
	Usable          bool   `json:"usable"`
	LibvirtUp       bool   `json:"libvirt_up"`
	Draining        bool   `json:"draining"`
	FreeMemoryBytes int64  `json:"free_memory_bytes"`
	ActiveDomains   int    `json:"active_domains"`
	// Planned counts the domains the plan sent there.
	Planned int    `json:"planned"`
	Error   string `json:"error,omitempty"`
}

// DomainReport is one domain's evacuation.
type DomainReport struct {
	Name        string `json:"name"`
	UUID        string `json:"uuid"`
	Priority    int    `json:"priority"`
	MemoryBytes uint64 `json:"memory_bytes"`
	// Plan is migrate, managedsave, shutdown, leave or skip.
	Plan   string `json:"plan"`
	Target string `json:"target,omitempty"`
	// Actions is what was done, in order: migrate, managedsave, leave,
	// shutdown, destroy.
	Actions     []string `json:"actions"`
	Result      string   `json:"result"`
	TookSeconds float64  `json:"took_seconds"`
	// Reason says why it was not migrated; Error what failed.
	Reason string `json:"reason,omitempty"`
	Error  string `json:"error,omitempty"`
	// MetadataError: its lvhook metadata could not be read.
	MetadataError string `json:"metadata_error,omitempty"`

	took time.Duration
}

// Results of a domain.
const (
	ResultPlanned   = "planned" // dry run
	ResultMigrated  = "migrated"
	ResultSaved     = "saved"
	ResultShutDown  = "shut-down"
	ResultDestroyed = "destroyed"
	ResultLeft      = "left"
	ResultSkipped   = "skipped"
	// ResultGone: it stopped here by other means meanwhile.
	ResultGone = "gone"
	// ResultFailed: its fallback failed; it still runs here.
	ResultFailed = "failed"
	// ResultNotDone: the evacuation's timeout passed first.
	ResultNotDone = "not-done"
)

func newReport(host string, start time.Time, dryRun bool, peers []Peer, steps []Step) *Report {
	r := &Report{Version: 1, Host: host, DryRun: dryRun, StartedAt: start.UTC(), Peers: []PeerReport{}, Domains: []DomainReport{}}
	for _, p := range peers {
		pr := PeerReport{Name: p.Name, Usable: p.usable(), LibvirtUp: p.Capacity.LibvirtUp, Draining: p.Capacity.Draining,
			FreeMemoryBytes: p.Capacity.FreeMemoryBytes, ActiveDomains: p.Capacity.ActiveDomains, Error: p.Err}
		for _, st := range steps {
			if st.Target == p.Name {
				pr.Planned++
			}
		}
		r.Peers = append(r.Peers, pr)
	}
	for _, st := range steps {
		d := DomainReport{Name: st.Name, UUID: st.UUID, Priority: st.Priority, MemoryBytes: st.Memory, Plan: st.Action,
			Target: st.Target, Actions: []string{}, Reason: st.Reason, MetadataError: st.MetaErr}
		if dryRun {
			d.Result = ResultPlanned
		}
		r.Domains = append(r.Domains, d)
	}
	return r
}

// finish counts and times the report.
func (r *Report) finish(end time.Time) {
	r.TookSeconds = seconds(end.Sub(r.StartedAt))
	r.Summary = Summary{Domains: len(r.Domains)}
	for i := range r.Domains {
		d := &r.Domains[i]
		d.TookSeconds = seconds(d.took)
		if d.Result == ResultMigrated || r.DryRun && d.Plan == ActionMigrate {
			r.Summary.Migrated++
		} else {
			r.Summary.NotMigrated++
		}
	}
}

func seconds(d time.Duration) float64 {
	return float64(d.Round(100*time.Millisecond)) / float64(time.Second)
}

// OK tells whether every domain was migrated (a dry run: would be), with
// metadata lvhook could read: exit status 0.
func (r *Report) OK() bool {
	for _, d := range r.Domains {
		if d.MetadataError != "" {
			return false
		}
	}
	return r.Summary.NotMigrated == 0
}

// addError adds what failed to what failed before for the domain.
func (d *DomainReport) addError(msg string) {
	if d.Error != "" {
		d.Error += "; "
	}
	d.Error += msg
}

// plannedLine is a dry run's line for a step.
func plannedLine(st Step) string {
	if st.Action == ActionMigrate {
		return fmt.Sprintf("%s -> %s: would migrate (priority %d, %s)", st.Name, st.Target, st.Priority, Size(st.Memory))
	}
	return fmt.Sprintf("%s: would %s (priority %d): %s", st.Name, st.Action, st.Priority, st.Reason)
}

// WriteJSON writes the report as one indented JSON document.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes the report for a terminal: a summary line, a row per
// domain in the plan's order, then why each domain that was not migrated
// was not, and what failed.
func (r *Report) WriteTable(w io.Writer) error {
	var b strings.Builder
	if r.DryRun {
		fmt.Fprintf(&b, "lvhook evacuate --dry-run on %s: %d domain%s, %d would migrate, %d would not\n",
			r.Host, r.Summary.Domains, plural(r.Summary.Domains), r.Summary.Migrated, r.Summary.NotMigrated)
	} else {
		fmt.Fprintf(&b, "lvhook evacuate on %s: %d domain%s, %d migrated, %d not migrated, in %s\n",
			r.Host, r.Summary.Domains, plural(r.Summary.Domains), r.Summary.Migrated, r.Summary.NotMigrated,
			took(time.Duration(r.TookSeconds*float64(time.Second))))
	}
	if len(r.Domains) > 0 {
		b.WriteString("\n")
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "DOMAIN\tPRIORITY\tACTION\tTARGET\tRESULT\tTOOK")
		for _, d := range r.Domains {
			action, spent := strings.Join(d.Actions, ","), took(d.took)
			if r.DryRun || action == "" {
				action, spent = d.Plan, "-"
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", d.Name, d.Priority, action, dash(d.Target), d.Result, spent)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	var notes []string
	for _, d := range r.Domains {
		if d.MetadataError != "" {
			notes = append(notes, d.MetadataError)
		}
		if d.Result == ResultMigrated || d.Reason == "" && d.Error == "" {
			continue
		}
		note := d.Reason
		if d.Error != "" {
			note = strings.TrimPrefix(note+": "+d.Error, ": ")
		}
		notes = append(notes, d.Name+": "+note)
	}
	if len(notes) > 0 {
		b.WriteString("\n" + strings.Join(notes, "\n") + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
