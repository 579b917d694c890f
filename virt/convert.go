package virt

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	libvirt "github.com/digitalocean/go-libvirt"
)

// stateName is libvirt's name of a state, as virsh domstate prints it.
func stateName(s libvirt.DomainState) string {
	switch s {
	case libvirt.DomainRunning:
		return "running"
	case libvirt.DomainBlocked:
		return "blocked"
	case libvirt.DomainPaused:
		return "paused"
	case libvirt.DomainShutdown:
		return "shutdown"
	case libvirt.DomainShutoff:
		return "shutoff"
	case libvirt.DomainCrashed:
		return "crashed"
	case libvirt.DomainPmsuspended:
		return "pmsuspended"
	}
	return "nostate"
}

func stateOf(s libvirt.DomainState) DomainState {
	switch s {
	case libvirt.DomainRunning:
		return StateRunning
	case libvirt.DomainPaused, libvirt.DomainPmsuspended:
		return StatePaused
	case libvirt.DomainShutoff:
		return StateShutoff
	case libvirt.DomainCrashed:
		// libvirt lists a crashed domain as active: QEMU is kept.
		return StateCrashed
	}
	return StateOther
}

// jobOf reads virDomainGetJobStats' answer. On a migration's destination
// libvirt refuses the call ("migration statistics are available only on the
// source host"): that refusal is how an incoming migration shows.
func jobOf(typ int32, params []libvirt.TypedParam, err error) (Job, error) {
	if err != nil {
		var le libvirt.Error
		if errors.As(err, &le) && le.Code == uint32(libvirt.ErrOperationUnsupported) &&
			strings.Contains(le.Message, "only on the source host") {
			return Job{Kind: JobMigrationIn}, nil
		}
		return Job{}, mapError(err)
	}
	if libvirt.DomainJobType(typ) == libvirt.DomainJobNone {
		return Job{Kind: JobNone}, nil
	}
	job := Job{Kind: JobUnknown}
	for _, p := range params {
		switch p.Field {
		case libvirt.DomainJobOperationStr:
			op, ok := p.Value.I.(int32)
			if !ok {
				continue
			}
			switch libvirt.DomainJobOperation(op) {
			case libvirt.DomainJobOperationStrMigrationOut:
				job.Kind = JobMigrationOut
			case libvirt.DomainJobOperationStrMigrationIn:
				job.Kind = JobMigrationIn
			case libvirt.DomainJobOperationStrUnknown:
			default:
				job.Kind = JobOther
			}
		case libvirt.DomainJobTimeElapsed:
			if ms, ok := p.Value.I.(uint64); ok {
				job.Elapsed = time.Duration(ms) * time.Millisecond
			}
		}
	}
	return job, nil
}

// mapError turns libvirt's "no domain" errors into ErrNoDomain.
func mapError(err error) error {
	var le libvirt.Error
	if errors.As(err, &le) {
		switch libvirt.ErrorNumber(le.Code) {
		case libvirt.ErrNoDomain:
			return fmt.Errorf("%w: %s", ErrNoDomain, le.Message)
		case libvirt.ErrOperationInvalid:
			if strings.Contains(le.Message, "not running") {
				return fmt.Errorf("%w: %s", ErrNoDomain, le.Message)
			}
		}
	}
	return err
}

func formatUUID(u libvirt.UUID) string {
	h := hex.EncodeToString(u[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

func parseUUID(s string) (libvirt.UUID, error) {
	var u libvirt.UUID
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(b) != len(u) {
		return u, fmt.Errorf("%q is not a domain UUID", s)
	}
	copy(u[:], b)
	return u, nil
}
