package main

import (
	"errors"
	"net"

	"github.com/cloudflare/tableflip"
	"github.com/rs/zerolog"
)

// upgrader hands the listening sockets to a new binary on SIGUSR2, so an
// upgrade refuses no connection and cuts no session: the new process
// starts from the file on disk with the same command line, inherits every
// listener, and once it is ready the old one stops accepting and drains
// its sessions as on SIGTERM. Built on cloudflare/tableflip rather than
// systemd socket activation, because the proxy must also keep serving
// when started by hand or by another supervisor, and the passive data
// listeners of the running transfers stay with the old process, which
// socket activation could not pass on either.
type upgrader struct {
	tf *tableflip.Upgrader // nil where the platform cannot upgrade in place
}

func newUpgrader(pidFile string) (*upgrader, error) {
	tf, err := tableflip.New(tableflip.Options{PIDFile: pidFile})
	if errors.Is(err, tableflip.ErrNotSupported) {
		return &upgrader{}, nil
	}
	if err != nil {
		return nil, err
	}
	return &upgrader{tf: tf}, nil
}

// listen returns the listener for addr inherited from the process being
// replaced, or a new one.
func (u *upgrader) listen(addr string) (net.Listener, error) {
	if u.tf == nil {
		return net.Listen("tcp", addr)
	}
	return u.tf.Listen("tcp", addr)
}

// ready tells the process being replaced, if any, to stop accepting and
// drain, and writes the PID file.
func (u *upgrader) ready(log zerolog.Logger) {
	if u.tf == nil {
		return
	}
	if u.tf.HasParent() {
		log.Info().Msg("upgrade: taking over the listeners; the old process drains")
	}
	if err := u.tf.Ready(); err != nil {
		log.Error().Err(err).Msg("upgrade: cannot signal readiness")
	}
}

// upgrade starts the binary on disk as the new process.
func (u *upgrader) upgrade(log zerolog.Logger) {
	if u.tf == nil {
		log.Warn().Msg("upgrade: not supported on this platform")
		return
	}
	log.Info().Msg("upgrade: starting the new binary")
	if err := u.tf.Upgrade(); err != nil {
		log.Error().Err(err).Msg("upgrade failed; this process goes on")
	}
}

// inherited reports whether this process takes over from another.
func (u *upgrader) inherited() bool { return u.tf != nil && u.tf.HasParent() }

// exit is closed once a new process has taken over.
func (u *upgrader) exit() <-chan struct{} {
	if u.tf == nil {
		return nil
	}
	return u.tf.Exit()
}

func (u *upgrader) stop() {
	if u.tf != nil {
		u.tf.Stop()
	}
}
