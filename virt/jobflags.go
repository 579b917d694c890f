package virt

import (
	"encoding/xml"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// LibvirtStatusDir is where libvirt's qemu driver keeps the status file of
// each running domain (libvirtd and virqemud alike).
const LibvirtStatusDir = "/run/libvirt/qemu"

// MigrateOffline is VIR_MIGRATE_OFFLINE of libvirt's virDomainMigrateFlags.
const MigrateOffline = 0x400

// AsyncMigrationOut is how the status file names the source's migration job.
const AsyncMigrationOut = "migration out"

// JobFlags are the async job and the API flags of a running domain's
// current job, as libvirt records them.
type JobFlags struct {
	Async string
	Flags uint64
	// Started is the job's start in milliseconds since the epoch: it tells
	// one job from the next exactly.
	Started uint64
}

// Offline tells a migration job started with --offline: the source's guest
// keeps running and nothing is handed over.
func (j JobFlags) Offline() bool { return j.Flags&MigrateOffline != 0 }

// ReadJobFlags reads the job of domain name from libvirt's status file,
// DIR/NAME.xml: <domstatus> ... <job async='migration out' flags='0x...'>
// (libvirt 9.0 and 11.3, qemuDomainObjPrivateXMLFormatJob, written when a
// job starts or changes phase). It is the only place where libvirt tells an
// offline migration from a live one: virDomainGetJobStats reports both as an
// outgoing migration, and an offline migration of a running domain holds
// that job on the source while the destination's migrate begin runs.
func ReadJobFlags(dir, name string) (JobFlags, error) {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return JobFlags{}, fmt.Errorf("domain name %q cannot name a status file", name)
	}
	data, err := os.ReadFile(filepath.Join(dir, name+".xml"))
	if err != nil {
		return JobFlags{}, fmt.Errorf("libvirt's status file: %w", err)
	}
	var st struct {
		XMLName xml.Name `xml:"domstatus"`
		Jobs    []struct {
			Async   string `xml:"async,attr"`
			Flags   string `xml:"flags,attr"`
			Started string `xml:"asyncStarted,attr"`
		} `xml:"job"`
	}
	if err := xml.Unmarshal(data, &st); err != nil {
		return JobFlags{}, fmt.Errorf("libvirt's status file %s: %w", filepath.Join(dir, name+".xml"), err)
	}
	if len(st.Jobs) == 0 {
		return JobFlags{Async: "none"}, nil
	}
	j := JobFlags{Async: st.Jobs[0].Async}
	for _, f := range []struct {
		attr, val string
		to        *uint64
	}{{"flags", st.Jobs[0].Flags, &j.Flags}, {"asyncStarted", st.Jobs[0].Started, &j.Started}} {
		if f.val == "" {
			continue
		}
		if *f.to, err = strconv.ParseUint(f.val, 0, 64); err != nil {
			return JobFlags{}, fmt.Errorf("libvirt's status file %s: job %s %q: %w", filepath.Join(dir, name+".xml"), f.attr, f.val, err)
		}
	}
	return j, nil
}
