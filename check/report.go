package check

import (
	"strings"
	"time"

	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/virt"
)

// Version is the version of the JSON document check writes. It changes
// only when a field is removed or changes meaning; new fields may appear in
// any version.
const Version = 1

// Job is a domain's current libvirt job, as the report names it.
type Job string

const (
	JobNone         Job = ""
	JobMigrationOut Job = "migration-out"
	JobMigrationIn  Job = "migration-in"
	JobOther        Job = "other"

	// jobNoneName is JobNone in the report.
	jobNoneName Job = "none"
)

// reportJob names a job for the report: a job whose operation libvirt does
// not tell is other.
func reportJob(j virt.Job) Job {
	switch j.Kind {
	case virt.JobNone:
		return JobNone
	case virt.JobMigrationOut:
		return JobMigrationOut
	case virt.JobMigrationIn:
		return JobMigrationIn
	}
	return JobOther
}

// Holder is another host holding an LV lock.
type Holder struct {
	Host string       `json:"host"`
	Mode lvmlock.Mode `json:"mode"`
	// HostID and State are set when sanlock told: the holder's host_id, and
	// whether it still renews its host lease (live, failing, dead).
	HostID int               `json:"host_id,omitempty"`
	State  lvmlock.HostState `json:"state,omitempty"`
}

// Report is the result of a check; its JSON form is documented on the check
// command (lvhook(8)) and versioned by Version.
type Report struct {
	Version   int       `json:"version"`
	Host      string    `json:"host"`
	CheckedAt time.Time `json:"checked_at"`
	Healthy   bool      `json:"healthy"`
	Summary   Summary   `json:"summary"`
	// Problems come worst first.
	Problems   []Problem         `json:"problems"`
	Lockspaces []LockspaceReport `json:"lockspaces"`
	Domains    []DomainReport    `json:"domains"`
}

// Summary counts what was checked.
type Summary struct {
	Domains  int `json:"domains"`
	LVs      int `json:"lvs"`
	Problems int `json:"problems"`
}

// Problem is one thing that is wrong or that will break a start or a live
// migration, with one line of advice.
type Problem struct {
	Code    string `json:"code"`
	Domain  string `json:"domain,omitempty"`
	UUID    string `json:"uuid,omitempty"`
	VG      string `json:"vg,omitempty"`
	LV      string `json:"lv,omitempty"`
	Message string `json:"message"`
	Advice  string `json:"advice"`
	// also lists the UUIDs of the domains the problem counts on besides
	// UUID's (a host that stopped renewing holds their LVs); finish counts
	// it in their DomainReport.Problems.
	also []string
}

// Lockspace states of a VG on this host.
const (
	LockspaceStarted     = "started"
	LockspaceNotStarted  = "not-started"
	LockspaceNoLvmlockd  = "lvmlockd-not-running"
	LockspaceLocal       = "local"   // not a shared VG: no lockspace
	LockspaceVGMissing   = "missing" // lvm does not know the VG here
	LockspaceKilled      = "killed"  // lvhook kill-vg killed it here: lvm is not asked
	LockspaceUnknownKind = "unknown"
)

// LockspaceReport is one VG used by the checked domains.
type LockspaceReport struct {
	VG       string `json:"vg"`
	Shared   bool   `json:"shared"`
	LockType string `json:"lock_type,omitempty"`
	State    string `json:"state"`
	// Hosts are the hosts of its sanlock lockspace, when sanlock was read;
	// HostsError says why they are missing when reading failed.
	Hosts      []LockspaceHost `json:"hosts,omitempty"`
	HostsError string          `json:"hosts_error,omitempty"`
}

// DomainReport is one domain.
type DomainReport struct {
	Name   string `json:"name"`
	UUID   string `json:"uuid"`
	State  string `json:"state"`
	Active bool   `json:"active"`
	// Job: none, migration-out, migration-in or other.
	Job Job `json:"job"`
	// Managed is false for a domain that opted out of lvhook (its LVs are
	// then not listed) or whose XML could not be read.
	Managed bool       `json:"managed"`
	LVs     []LVReport `json:"lvs"`
	// Problems counts the problems of this domain and its LVs.
	Problems int `json:"problems"`
}

// LVReport is one LV of a domain.
type LVReport struct {
	VG   string `json:"vg"`
	LV   string `json:"lv"`
	Disk string `json:"disk"`
	// Need is the mode the disk needs while the domain runs without a
	// migration: ex, or sh for shareable, read-only and backing disks.
	Need lvmlock.Mode `json:"need"`
	// Expected is the lock this host should hold now: need while running,
	// sh during a migration job, none when the domain is not running here.
	Expected string `json:"expected"`
	// Actual is what this host holds: none, sh, ex, or "unlocked" for an
	// LV active without an lvmlockd lock.
	Actual    string `json:"actual"`
	Segtype   string `json:"segtype,omitempty"`
	Lockspace string `json:"lockspace"`
	Others    Others `json:"others"`
	// Problems lists the codes of this LV's problems.
	Problems []string `json:"problems"`
}

// Others says whether other hosts hold the LV, and how that is known.
type Others struct {
	// Source: "exclusive-here" (an ex lock here excludes every other host),
	// "peers" (the peers' lock helpers answered), "sanlock" (the LV's lease
	// as sanlock wrote it, when the peers did not answer), or "unknown".
	Source  string   `json:"source"`
	Holders []Holder `json:"holders"`
	// Error says why they are unknown when a source failed.
	Error string `json:"error,omitempty"`
}

// Others sources.
const (
	OthersExclusiveHere = "exclusive-here"
	OthersPeers         = "peers"
	OthersSanlock       = "sanlock"
	OthersUnknown       = "unknown"
)

// actualUnlocked is an LV active here without an lvmlockd lock.
const actualUnlocked = "unlocked"

// ConfigInvalidReport is the report of a check that could not start: the
// config file cannot be used (err, a *ConfigError, names the file and the
// key).
func ConfigInvalidReport(host string, now time.Time, err error) *Report {
	ev := &evaluation{rep: &Report{Version: Version, Host: host, CheckedAt: now.UTC(),
		Problems: []Problem{}, Lockspaces: []LockspaceReport{}, Domains: []DomainReport{}}}
	ev.add(Problem{Code: ProblemConfigInvalid, Message: lvmlock.OneLine(err.Error()) + "; nothing else was checked",
		Advice: "fix it (lvhook(8) and the package's commented /etc/lvhook/lvhook.toml describe every key); until then lvhook refuses every start and incoming migration here, leaves LVs active at stop, and the lock helper does not run"})
	ev.finish()
	return ev.rep
}

func holderList(hs []Holder) string {
	s := make([]string, len(hs))
	for i, h := range hs {
		s[i] = h.Host + " (" + h.Mode.String()
		if h.State != "" && h.State != lvmlock.HostLive {
			s[i] += ", " + string(h.State)
		}
		s[i] += ")"
	}
	return strings.Join(s, ", ")
}
