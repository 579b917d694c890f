package main

import (
	"context"
	"fmt"
	"net"
	"os/signal"
	"syscall"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"github.com/lvhook/lvhook/config"
	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/migration"
	"github.com/lvhook/lvhook/peer"
	"github.com/lvhook/lvhook/state"
	"github.com/lvhook/lvhook/virt"
)

func daemonCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "daemon",
		Usage: "run the lock helper: peer handover of live migrations and lock reconciliation (lvhook.service)",
		Description: `Connects to the local libvirtd (daemon.libvirt_socket), follows domain
lifecycle events, converts LVs back to exclusive after a live migration or a
cancelled one, retries failed deactivations, and serves the peers' downgrade
requests, and the capacity questions of a peer that evacuates (free memory,
running domains, draining while this host evacuates itself), on
daemon.listen (mutual TLS, only the hosts of [[daemon.peer]]).
Notifies systemd (Type=notify) once the peer server listens and libvirtd was
tried. Stops on SIGTERM or SIGINT.`,
		Action: func(c *cli.Context) error {
			if err := runDaemon(c.Context, e); err != nil {
				e.code = exitFailure
				return err
			}
			return nil
		},
	}
}

func runDaemon(parent context.Context, e *env) error {
	cfgPath, mustExist := config.Path()
	cfg, err := config.Load(cfgPath, mustExist)
	if err != nil {
		// Not a half-read config: refuse, in the one line systemd shows.
		return fmt.Errorf("refusing to start the lock helper: %w", err)
	}
	log := newLogger(cfg.LogLevel, e.Stderr, zerolog.InfoLevel)
	for _, w := range cfg.Warnings() {
		log.Warn().Str("config", cfgPath).Msg(w)
	}
	host := cfg.HostName()
	lvm := &lvmlock.Client{
		Runner:          lvmlock.ExecRunner{Timeout: cfg.LVMTimeout.D()},
		DryRun:          cfg.DryRun,
		RollbackTimeout: cfg.RollbackTimeout.D(),
		Log:             log,
	}
	helper := migration.NewHelper(cfg, host, lvm, &state.State{Dir: cfg.StateDir}, log)

	// A signal ends the peer server first; the helper (its libvirt
	// connection, which a downgrade in flight still uses) only once the
	// server has answered the requests in flight.
	ctx, stop := signal.NotifyContext(parent, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	helperCtx, stopHelper := context.WithCancel(context.WithoutCancel(parent))
	defer stopHelper()

	serveErr := make(chan error, 1)
	if cfg.Daemon.Listen != "" && len(cfg.Daemon.Peers) > 0 {
		cr, err := peer.LoadCredentials(cfg.Daemon.CACert, cfg.Daemon.Cert, cfg.Daemon.Key)
		if err != nil {
			return fmt.Errorf("%w (set daemon.ca_cert, daemon.cert and daemon.key)", err)
		}
		ln, err := net.Listen("tcp", cfg.Daemon.Listen)
		if err != nil {
			return fmt.Errorf("peer server: %w", err)
		}
		srv := &peer.Server{Helper: helper, Peers: cfg.Daemon.Peers, MaxWait: cfg.Daemon.PeerTimeout.D(), Log: log}
		go func() { serveErr <- srv.Serve(ctx, ln, peer.ServerTLS(cr, cfg.Daemon.Peers, log)) }()
		log.Info().Str("listen", ln.Addr().String()).Str("host", host).Int("peers", len(cfg.Daemon.Peers)).Msg("peer server listening")
	} else {
		log.Warn().Msg("no daemon.listen or no [[daemon.peer]]: peer server off, live migrations cannot be handed over")
		go func() {
			<-ctx.Done()
			serveErr <- nil
		}()
	}

	notify := func(state string) {
		// sd_notify(3); without $NOTIFY_SOCKET (not started by systemd
		// with Type=notify) nothing is sent.
		if _, err := daemon.SdNotify(false, state); err != nil {
			log.Warn().Err(err).Msg("cannot notify systemd")
		}
	}
	runDone := make(chan struct{})
	go func() {
		defer close(runDone)
		helper.Run(helperCtx, virt.Dialer(cfg.Daemon.LibvirtSocket), notify)
	}()
	// Serve returns after a signal, once the requests in flight are
	// answered, or when the peer server dies: then stop rather than run
	// half a helper.
	serveFailed := <-serveErr
	stop()
	notify("STOPPING=1")
	stopHelper()
	<-runDone
	log.Info().Msg("lock helper stopped")
	if serveFailed != nil {
		return fmt.Errorf("peer server: %w", serveFailed)
	}
	return nil
}
