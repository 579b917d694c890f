package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/lvhook/lvhook/lvmlock"
)

// HostName is this host's name as its peers know it: daemon.host_name, or
// the system's host name ("localhost" when it has none).
func (c Config) HostName() string {
	if c.Daemon.HostName != "" {
		return c.Daemon.HostName
	}
	name, err := os.Hostname()
	if err != nil || name == "" {
		return "localhost"
	}
	return name
}

// PeerName names the peer whose sanlock host_id is id, or returns "": for
// no peer, and for a host_id two peers claim (Warnings), which would name
// the wrong host as often as the right one.
func (d DaemonConfig) PeerName(id int) string {
	name := ""
	for _, p := range d.Peers {
		if p.HostID == id && id > 0 && id <= maxHostID {
			if name != "" {
				return ""
			}
			name = p.Name
		}
	}
	return name
}

// DefaultPath is read when LVHOOK_CONFIG does not name another file.
// The file is optional: with none, every default below applies.
const DefaultPath = "/etc/lvhook/lvhook.toml"

// Config is lvhook's configuration (packaging/lvhook.toml documents it).
type Config struct {
	// HookTimeout bounds a whole hook call; libvirt itself waits forever.
	HookTimeout Duration `toml:"hook_timeout"`
	// LVMTimeout bounds each lvm or lvmlockctl command.
	LVMTimeout Duration `toml:"lvm_timeout"`
	// RollbackTimeout bounds the rollback of a failed activation, which
	// runs even after HookTimeout has passed.
	RollbackTimeout Duration `toml:"rollback_timeout"`
	// SharedRetries is how many more times a refused sh activation of an
	// incoming migration is tried; RetryDelay is the first pause, doubled
	// after each try.
	SharedRetries int      `toml:"shared_retries"`
	RetryDelay    Duration `toml:"retry_delay"`
	// MarkerTTL is how long a migrate-begin marker stays valid for the
	// prepare of the same incoming migration.
	MarkerTTL Duration `toml:"marker_ttl"`
	// KillVGTimeout bounds a whole `lvhook kill-vg` run: sanlock resets the
	// host about 40 s after it started the kill command.
	KillVGTimeout Duration `toml:"kill_vg_timeout"`
	// StateDir holds markers and per-domain records; it must not survive a
	// reboot (a tmpfs such as /run).
	StateDir string `toml:"state_dir"`
	// StoragePoolDir holds libvirt's persistent storage pool definitions.
	StoragePoolDir string `toml:"storage_pool_dir"`
	// DryRun logs the lock changes lvhook would make and makes none.
	DryRun bool `toml:"dry_run"`
	// LogLevel: debug, info, warn, error.
	LogLevel string `toml:"log_level"`
	// Lockspaces lists the shared VGs whose lockspaces `lvhook lockspaces`
	// (lvhook-lockspaces.service, before libvirtd at boot) starts; empty:
	// every shared VG lvm sees.
	Lockspaces []string `toml:"lockspaces"`
	// LockspaceStartTimeout bounds `lvhook lockspaces`; a host's first join
	// after a crash takes about 160 s (sanlock waits for its old lease).
	LockspaceStartTimeout Duration `toml:"lockspace_start_timeout"`
	// LockspaceWait is how long a start (prepare) waits for a lockspace
	// that is still starting before it is refused; 0: not at all. A
	// prepare may then take HookTimeout + LockspaceWait.
	LockspaceWait Duration `toml:"lockspace_wait"`

	Daemon   DaemonConfig   `toml:"daemon"`
	Evacuate EvacuateConfig `toml:"evacuate"`
}

// DaemonConfig configures the lock helper (`lvhook daemon`) and its peers.
type DaemonConfig struct {
	// LibvirtSocket is libvirtd's (or virtqemud's) UNIX socket.
	LibvirtSocket string `toml:"libvirt_socket"`
	// Listen is the address the peer server listens on ("" disables it).
	Listen string `toml:"listen"`
	// HostName names this host to peers and in messages; default: hostname.
	HostName string `toml:"host_name"`
	// TLS files; defaults are libvirt's PKI paths. Cert and Key are the
	// peer server's identity, ClientCert and ClientKey the identity the
	// destination's hook presents when it asks a peer.
	CACert     string `toml:"ca_cert"`
	Cert       string `toml:"cert"`
	Key        string `toml:"key"`
	ClientCert string `toml:"client_cert"`
	ClientKey  string `toml:"client_key"`
	// PeerTimeout bounds the handover's requests of one hook call: the
	// reservation at migrate begin (the lease holder's host first, then
	// the others), the downgrade at prepare.
	PeerTimeout Duration `toml:"peer_timeout"`
	// ReconcileInterval is the period of the full reconciliation pass.
	ReconcileInterval Duration `toml:"reconcile_interval"`
	// ExclusiveTimeout is how long the destination keeps trying sh->ex after
	// a migration before it reports the LV as stuck.
	ExclusiveTimeout Duration `toml:"exclusive_timeout"`
	Peers            []Peer   `toml:"peer"`
}

// Peer is another host of the cluster.
type Peer struct {
	// Name must match the CN or a DNS SAN of the peer's certificate.
	Name    string `toml:"name"`
	Address string `toml:"address"`
	// HostID is the peer's sanlock host_id (lvmlocal.conf), used to name
	// the holder of a lock and to ask the holder first at a migration's
	// reservation; 0 when unknown. A host_id two peers claim is unused.
	HostID int `toml:"host_id"`
	// LibvirtURI is the peer's libvirtd as this host's libvirtd reaches it
	// for a peer-to-peer live migration (`lvhook evacuate`); "" for
	// qemu+tls://NAME/system (MigrationURI).
	LibvirtURI string `toml:"libvirt_uri"`
	// MigrateURI, when set, is where QEMU sends the memory (libvirt's
	// migrate_uri, virsh migrate --migrateuri), e.g. a dedicated network.
	MigrateURI string `toml:"migrate_uri"`
}

// Default returns the configuration used when no file sets a value.
func Default() Config {
	return Config{
		HookTimeout:           Duration(30 * time.Second),
		LVMTimeout:            Duration(20 * time.Second),
		RollbackTimeout:       Duration(10 * time.Second),
		SharedRetries:         2,
		RetryDelay:            Duration(time.Second),
		MarkerTTL:             Duration(time.Minute),
		KillVGTimeout:         Duration(25 * time.Second),
		StateDir:              "/run/lvhook",
		StoragePoolDir:        "/etc/libvirt/storage",
		LogLevel:              "info",
		Lockspaces:            []string{},
		LockspaceStartTimeout: Duration(5 * time.Minute),
		LockspaceWait:         Duration(time.Minute),
		Daemon: DaemonConfig{
			LibvirtSocket:     "/var/run/libvirt/libvirt-sock",
			Listen:            ":16520",
			CACert:            "/etc/pki/CA/cacert.pem",
			Cert:              "/etc/pki/libvirt/servercert.pem",
			Key:               "/etc/pki/libvirt/private/serverkey.pem",
			ClientCert:        "/etc/pki/libvirt/clientcert.pem",
			ClientKey:         "/etc/pki/libvirt/private/clientkey.pem",
			PeerTimeout:       Duration(10 * time.Second),
			ReconcileInterval: Duration(30 * time.Second),
			ExclusiveTimeout:  Duration(2 * time.Minute),
		},
		Evacuate: defaultEvacuate(),
	}
}

// MaxSize bounds the configuration file: the hook reads it at every
// call and must not hang or fill memory on a wrong path.
const MaxSize = 1 << 20

// Error is a configuration file lvhook refuses to use. It names the
// file and the key at fault, or the line when the file does not parse.
type Error struct {
	Path string
	Key  string // as written in the file: "hook_timeout", "daemon.peer.address"
	Line int    // when Key is not known
	Msg  string
}

func (e *Error) Error() string {
	switch {
	case e.Key != "":
		return fmt.Sprintf("%s: %s: %s", e.Path, e.Key, e.Msg)
	case e.Line > 0:
		return fmt.Sprintf("%s: line %d: %s", e.Path, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.Path, e.Msg)
}

// Load reads path over the defaults. A missing file is not an error
// unless mustExist. Anything else that is wrong is a *Error, and the
// returned Config must then not be used: an unknown key (so that a typo does
// not go unnoticed), a value of the wrong type, a value out of range, a path
// that is not a regular file or is larger than MaxSize.
func Load(path string, mustExist bool) (Config, error) {
	cfg := Default()
	data, err := readConfigFile(path)
	var pe *fs.PathError
	switch {
	case errors.Is(err, fs.ErrNotExist) && !mustExist:
		return cfg, nil
	case errors.As(err, &pe):
		return cfg, &Error{Path: path, Msg: pe.Err.Error()}
	case err != nil:
		return cfg, &Error{Path: path, Msg: err.Error()}
	}
	md, err := toml.Decode(string(data), &cfg)
	if err != nil {
		return cfg, decodeError(path, err)
	}
	if undec := md.Undecoded(); len(undec) > 0 {
		return cfg, &Error{Path: path, Key: undec[0].String(), Msg: "unknown key"}
	}
	if err := cfg.validate(); err != nil {
		err.Path = path
		return cfg, err
	}
	return cfg, nil
}

// readConfigFile reads a regular file of at most MaxSize bytes. It
// opens without blocking, so that a FIFO named as the config cannot hang
// the hook.
func readConfigFile(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	switch {
	case err != nil:
		return nil, err
	case st.IsDir():
		return nil, errors.New("is a directory")
	case !st.Mode().IsRegular():
		return nil, errors.New("not a regular file")
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxSize {
		return nil, errors.New("larger than 1 MiB")
	}
	return data, nil
}

// typeError is the toml package's message for a value of the wrong type,
// which it gives as text only.
var typeError = regexp.MustCompile(`^toml: (?:line (\d+) )?\(last key "([^"]*)"\): (.*)$`)

func decodeError(path string, err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		ce := &Error{Path: path, Line: pe.Position.Line, Msg: pe.Message}
		// A value lvhook cannot take (a Duration's UnmarshalText) is
		// named by its key; a syntax error by its line.
		if strings.HasSuffix(pe.Message, durationHint) {
			ce.Key = pe.LastKey
		}
		return ce
	}
	if m := typeError.FindStringSubmatch(err.Error()); m != nil {
		return &Error{Path: path, Key: m[2], Msg: m[3]}
	}
	return &Error{Path: path, Msg: strings.TrimPrefix(err.Error(), "toml: ")}
}

// Salvage returns the defaults with the two paths a file Load refuses (a
// typo in another key) may still give, read alone: state_dir and
// daemon.libvirt_socket, when the file parses and each is an absolute path.
// `lvhook kill-vg` must act whatever the file: it keeps these so that its
// record is where the hooks look once the file is fixed, and so that it
// reaches the libvirtd that runs the domains.
func Salvage(path string) Config {
	cfg := Default()
	data, err := readConfigFile(path)
	if err != nil {
		return cfg
	}
	var v struct {
		StateDir string `toml:"state_dir"`
		Daemon   struct {
			LibvirtSocket string `toml:"libvirt_socket"`
		} `toml:"daemon"`
	}
	if _, err := toml.Decode(string(data), &v); err != nil {
		return cfg
	}
	if strings.HasPrefix(v.StateDir, "/") {
		cfg.StateDir = v.StateDir
	}
	if strings.HasPrefix(v.Daemon.LibvirtSocket, "/") {
		cfg.Daemon.LibvirtSocket = v.Daemon.LibvirtSocket
	}
	return cfg
}

// Path returns LVHOOK_CONFIG or the default path, and whether the file
// must exist (it must when named explicitly).
func Path() (string, bool) {
	if p := os.Getenv("LVHOOK_CONFIG"); p != "" {
		return p, true
	}
	return DefaultPath, false
}

// MaxKillVGTimeout keeps a kill-vg run inside sanlock's kill grace (40 s
// from the first kill command to the watchdog's reset), with time for
// lvmlockctl to drop the locks after it.
const MaxKillVGTimeout = 35 * time.Second

// minReconcileInterval keeps the lock helper's full pass (one lvs, one
// lvmlockctl, one libvirt query per domain) from running in a loop.
const minReconcileInterval = time.Second

// validate refuses values lvhook cannot work with; the error names the key.
func (c Config) validate() *Error {
	bad := func(key, format string, a ...any) *Error {
		return &Error{Key: key, Msg: fmt.Sprintf(format, a...)}
	}
	for _, d := range []struct {
		key string
		v   Duration
	}{
		{"hook_timeout", c.HookTimeout},
		{"lvm_timeout", c.LVMTimeout},
		{"rollback_timeout", c.RollbackTimeout},
		{"retry_delay", c.RetryDelay},
		{"marker_ttl", c.MarkerTTL},
		{"kill_vg_timeout", c.KillVGTimeout},
		{"daemon.peer_timeout", c.Daemon.PeerTimeout},
		{"daemon.exclusive_timeout", c.Daemon.ExclusiveTimeout},
		{"lockspace_start_timeout", c.LockspaceStartTimeout},
		{"evacuate.shutdown_timeout", c.Evacuate.ShutdownTimeout},
		{"evacuate.migration_timeout", c.Evacuate.MigrationTimeout},
		{"evacuate.timeout", c.Evacuate.Timeout},
	} {
		if d.v <= 0 {
			return bad(d.key, "must be positive, got %q", d.v.D())
		}
	}
	switch {
	case c.LVMTimeout > c.HookTimeout:
		return bad("lvm_timeout", "%q exceeds hook_timeout (%q)", c.LVMTimeout.D(), c.HookTimeout.D())
	case c.Daemon.ReconcileInterval.D() < minReconcileInterval:
		return bad("daemon.reconcile_interval", "must be at least %s, got %q", minReconcileInterval, c.Daemon.ReconcileInterval.D())
	case c.KillVGTimeout.D() > MaxKillVGTimeout:
		return bad("kill_vg_timeout", "must be at most %s (sanlock's kill grace is 40s), got %q", MaxKillVGTimeout, c.KillVGTimeout.D())
	case c.SharedRetries < 0 || c.SharedRetries > 20:
		return bad("shared_retries", "must be between 0 and 20, got %d", c.SharedRetries)
	case c.StateDir == "":
		return bad("state_dir", "must not be empty")
	case c.LockspaceWait < 0 || c.LockspaceWait.D() > maxLockspaceWait:
		return bad("lockspace_wait", "must be between 0 and %s, got %q", maxLockspaceWait, c.LockspaceWait.D())
	}
	for _, vg := range c.Lockspaces {
		if !lvmlock.ValidName(vg) {
			return bad("lockspaces", "%q is not a volume group name", vg)
		}
	}
	for i, p := range c.Daemon.Peers {
		switch {
		case p.Name == "":
			return bad("daemon.peer.name", "missing in %s; every peer needs a name and an address", peerLabel(i, p))
		case p.Address == "":
			return bad("daemon.peer.address", "missing in %s; every peer needs a name and an address", peerLabel(i, p))
		}
	}
	return c.validateEvacuate()
}

// maxLockspaceWait bounds lockspace_wait: libvirt waits for the prepare
// hook with the domain's start (and an autostart at boot) blocked.
const maxLockspaceWait = 10 * time.Minute

// maxHostID is sanlock's largest host_id (lvmlocal.conf's host_id).
const maxHostID = 2000

func peerLabel(i int, p Peer) string {
	if p.Name == "" {
		return fmt.Sprintf("[[daemon.peer]] #%d", i+1)
	}
	return fmt.Sprintf("[[daemon.peer]] #%d (%q)", i+1, p.Name)
}

// Warnings lists what in the peers looks wrong without making the file
// unusable: a host named twice, a host_id out of sanlock's range or shared
// by two peers. Such host_ids name no one (PeerName) and are asked about
// like an unknown holder. They are warnings, not errors, because a file
// that loaded before must keep loading: a refused file would make every
// hook call fail, release end included.
func (c Config) Warnings() []string {
	var out []string
	names, ids := map[string]int{}, map[int]int{}
	for i, p := range c.Daemon.Peers {
		if first, ok := names[strings.ToLower(p.Name)]; ok && p.Name != "" {
			out = append(out, fmt.Sprintf("daemon.peer.name: %s names the host of [[daemon.peer]] #%d again", peerLabel(i, p), first))
		}
		if p.HostID < 0 || p.HostID > maxHostID {
			out = append(out, fmt.Sprintf("daemon.peer.host_id: %d in %s is not a sanlock host_id (1 to %d; 0 or none: unknown); ignored", p.HostID, peerLabel(i, p), maxHostID))
		} else if first, ok := ids[p.HostID]; ok && p.HostID != 0 {
			out = append(out, fmt.Sprintf("daemon.peer.host_id: %d in %s is already the host_id of [[daemon.peer]] #%d; each host has its own, so neither is used", p.HostID, peerLabel(i, p), first))
		}
		names[strings.ToLower(p.Name)], ids[p.HostID] = i+1, i+1
	}
	return out
}

// Duration is a time.Duration written as "30s" in the config file.
type Duration time.Duration

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return durationError{string(b)}
	}
	*d = Duration(v)
	return nil
}

func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// durationError is a config value that is not a Go duration.
type durationError struct{ text string }

const durationHint = ` is not a duration (e.g. "30s")`

func (e durationError) Error() string { return fmt.Sprintf("%q", e.text) + durationHint }
