package check

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
)

// WriteJSON writes the report as one indented JSON document (Version).
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes the report for a terminal: a summary line, the problems
// worst first with one line of advice each, then one row per domain and LV.
func (r *Report) WriteTable(w io.Writer) error {
	var b strings.Builder
	host := r.Host
	if host == "" {
		host = "this host"
	}
	what := fmt.Sprintf("%d domain%s, %d LV%s", r.Summary.Domains, plural(r.Summary.Domains), r.Summary.LVs, plural(r.Summary.LVs))
	if r.Healthy {
		fmt.Fprintf(&b, "lvhook check on %s: healthy (%s)\n", host, what)
	} else {
		fmt.Fprintf(&b, "lvhook check on %s: %d problem%s (%s)\n", host, r.Summary.Problems, plural(r.Summary.Problems), what)
	}
	for i, p := range r.Problems {
		if i == 0 {
			b.WriteString("\n")
		}
		who := ""
		if p.Domain != "" {
			who = " " + p.Domain + ":"
		}
		fmt.Fprintf(&b, "%2d. [%s]%s %s\n    fix: %s\n", i+1, p.Code, who, p.Message, p.Advice)
	}
	if len(r.Domains) > 0 {
		b.WriteString("\n")
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "DOMAIN\tSTATE\tJOB\tLV\tDISK\tEXPECTED\tACTUAL\tLOCKSPACE\tOTHER HOSTS\tPROBLEMS")
		// Domains with problems first, as the problems above.
		doms := slices.Clone(r.Domains)
		slices.SortStableFunc(doms, func(a, b DomainReport) int {
			return cmp.Compare(min(b.Problems, 1), min(a.Problems, 1))
		})
		for _, d := range doms {
			job := string(d.Job)
			if d.Job == jobNoneName || job == "" {
				job = "-"
			}
			if len(d.LVs) == 0 {
				note := "(no LV disk)"
				switch {
				case !d.Managed && slices.ContainsFunc(r.Problems, func(p Problem) bool {
					return p.Code == ProblemDomainUnreadable && p.UUID == d.UUID
				}):
					note = "(unreadable)"
				case !d.Managed:
					note = "(opted out)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t-\t-\t-\t-\t-\t%s\n", d.Name, d.State, job, note, count(d.Problems))
				continue
			}
			for _, l := range d.LVs {
				disk := l.Disk
				if disk == "" {
					disk = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s/%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.Name, d.State, job, l.VG, l.LV,
					disk, l.Expected, l.Actual, l.Lockspace, l.Others.String(), codes(l.Problems))
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		// Why other hosts are unknown, once per reason.
		var seen []string
		for _, d := range r.Domains {
			for _, l := range d.LVs {
				if e := l.Others.Error; e != "" && !slices.Contains(seen, e) {
					seen = append(seen, e)
					fmt.Fprintf(&b, "\nother hosts unknown: %s\n", e)
				}
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// String renders the other holders for the table.
func (o Others) String() string {
	switch {
	case o.Source == OthersExclusiveHere:
		return "none (ex here)"
	case o.Source == OthersUnknown:
		return "unknown"
	case len(o.Holders) == 0:
		return "none"
	}
	return holderList(o.Holders)
}

func codes(c []string) string {
	if len(c) == 0 {
		return "-"
	}
	return strings.Join(c, ",")
}

func count(n int) string {
	if n == 0 {
		return "-"
	}
	return fmt.Sprint(n)
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
