package hook

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/BurntSushi/toml"
)

// DefaultConfigPath is read when LVHOOK_CONFIG does not name another file.
// The file is optional: with none, every default below applies.
const DefaultConfigPath = "/etc/lvhook/lvhook.toml"

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
	// StateDir holds markers and per-domain records; it must not survive a
	// reboot (a tmpfs such as /run).
	StateDir string `toml:"state_dir"`
	// StoragePoolDir holds libvirt's persistent storage pool definitions.
	StoragePoolDir string `toml:"storage_pool_dir"`
	// DryRun logs the lock changes lvhook would make and makes none.
	DryRun bool `toml:"dry_run"`
	// LogLevel: debug, info, warn, error.
	LogLevel string `toml:"log_level"`

	Daemon DaemonConfig `toml:"daemon"`
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
	// PeerTimeout bounds one downgrade request to a peer.
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
	// the holder of a lock; 0 when unknown.
	HostID int `toml:"host_id"`
}

// DefaultConfig returns the configuration used when no file sets a value.
func DefaultConfig() Config {
	return Config{
		HookTimeout:     Duration(30 * time.Second),
		LVMTimeout:      Duration(20 * time.Second),
		RollbackTimeout: Duration(10 * time.Second),
		SharedRetries:   2,
		RetryDelay:      Duration(time.Second),
		MarkerTTL:       Duration(time.Minute),
		StateDir:        "/run/lvhook",
		StoragePoolDir:  "/etc/libvirt/storage",
		LogLevel:        "info",
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
	}
}

// LoadConfig reads path over the defaults. A missing file is not an error
// unless mustExist; an unknown key is, so that a typo does not go unnoticed.
func LoadConfig(path string, mustExist bool) (Config, error) {
	cfg := DefaultConfig()
	md, err := toml.DecodeFile(path, &cfg)
	switch {
	case errors.Is(err, fs.ErrNotExist) && !mustExist:
		return cfg, nil
	case err != nil:
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	if undec := md.Undecoded(); len(undec) > 0 {
		return cfg, fmt.Errorf("config %s: unknown key %q", path, undec[0].String())
	}
	return cfg, cfg.validate()
}

// ConfigPath returns LVHOOK_CONFIG or the default path, and whether the file
// must exist (it must when named explicitly).
func ConfigPath() (string, bool) {
	if p := os.Getenv("LVHOOK_CONFIG"); p != "" {
		return p, true
	}
	return DefaultConfigPath, false
}

func (c Config) validate() error {
	switch {
	case c.HookTimeout <= 0 || c.LVMTimeout <= 0 || c.RollbackTimeout <= 0:
		return errors.New("config: hook_timeout, lvm_timeout and rollback_timeout must be positive")
	case c.LVMTimeout > c.HookTimeout:
		return errors.New("config: lvm_timeout must not exceed hook_timeout")
	case c.SharedRetries < 0 || c.SharedRetries > 20:
		return errors.New("config: shared_retries must be between 0 and 20")
	case c.StateDir == "":
		return errors.New("config: state_dir must not be empty")
	}
	for _, p := range c.Daemon.Peers {
		if p.Name == "" || p.Address == "" {
			return errors.New("config: every [[daemon.peer]] needs a name and an address")
		}
	}
	return nil
}

// Duration is a time.Duration written as "30s" in the config file.
type Duration time.Duration

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }
