package lvmlock

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// lvm reads its command lines with getopt, which takes any argument that
// starts with "-" for an option wherever it stands; a VG named
// "--config=log{file=...}" would make lvm, as root, write where the name
// says. So every VG and LV name lvmlock puts on a command line must pass
// ValidName, whoever sent it (a domain XML, a peer, the configuration), and
// the lvm command lines end their options with "--" besides.

// maxNameLen is lvm's NAME_LEN (128) less the terminating NUL.
const maxNameLen = 127

// ValidName reports whether s is a VG or LV name lvm accepts (lvm(8), VALID
// NAMES): 1 to 127 characters of [A-Za-z0-9+_.-], not starting with "-",
// and neither "." nor "..". lvm refuses a few more (reserved LV suffixes such
// as _rimage); those are not dangerous, and lvm says why itself.
func ValidName(s string) bool {
	if s == "" || len(s) > maxNameLen || s[0] == '-' || s == "." || s == ".." {
		return false
	}
	for _, c := range []byte(s) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '+' || c == '_' || c == '.' || c == '-'
		if !ok {
			return false
		}
	}
	return true
}

// NameError is a name refused before any command ran.
type NameError struct {
	// What the name is: "volume group name", "lease device path", ...
	What string
	Name string
}

func (e *NameError) Error() string {
	return fmt.Sprintf("%q is not a valid %s", e.Name, e.What)
}

// IsInvalidName reports whether err is, or wraps, a *NameError.
func IsInvalidName(err error) bool {
	var e *NameError
	return errors.As(err, &e)
}

// ValidVG returns a *NameError unless vg passes ValidName.
func ValidVG(vg string) error {
	if !ValidName(vg) {
		return &NameError{What: "volume group name", Name: vg}
	}
	return nil
}

// ValidRef returns a *NameError unless both names of r pass ValidName.
func ValidRef(r Ref) error {
	if err := ValidVG(r.VG); err != nil {
		return err
	}
	if !ValidName(r.LV) {
		return &NameError{What: "logical volume name", Name: r.LV}
	}
	return nil
}

// sanlock's command line parser (main.c, read_command_line) knows no "--":
// it takes the value of -s and the path of `direct dump` as they come, and
// splits a lockspace at ':'. What lvmlock gives it is checked instead.

// maxSanlockNameLen is sanlock's SANLK_NAME_LEN (no terminating NUL).
const maxSanlockNameLen = 48

// validLockspace returns a *NameError unless name is a sanlock lockspace name
// lvmlockd makes: lvm_<VG name>, within sanlock's length.
func validLockspace(name string) error {
	if len(name) > maxSanlockNameLen || !ValidName(name) {
		return &NameError{What: "sanlock lockspace name", Name: name}
	}
	return nil
}

// validLeasePath returns a *NameError unless path is an absolute, clean
// device path of printable characters without spaces: the lvmlock LV as
// sanlock reports it.
func validLeasePath(path string) error {
	ok := strings.HasPrefix(path, "/") && filepath.Clean(path) == path
	for _, c := range []byte(path) {
		ok = ok && c > ' ' && c < 0x7f
	}
	if !ok {
		return &NameError{What: "lease device path", Name: path}
	}
	return nil
}

// validRefs returns the first invalid name among refs.
func validRefs[T interface{ ref() Ref }](items []T) error {
	for _, it := range items {
		if err := ValidRef(it.ref()); err != nil {
			return err
		}
	}
	return nil
}

// ref lets validRefs take Refs and Targets (which embed a Ref) alike.
func (r Ref) ref() Ref { return r }
