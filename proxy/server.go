package proxy

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("proxy: server closed")

// Server accepts FTP control connections and runs a session for each.
type Server struct {
	cfg atomic.Pointer[Config] // what new sessions run with; see Reconfigure
	adm *admission

	nextID atomic.Uint64
	closed atomic.Bool

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	sessions  map[*session]struct{}
	sessWG    sync.WaitGroup
	// serveWG counts the accept loops. Shutdown waits for them before it
	// waits for the sessions: a connection an accept loop took while the
	// listeners were closing is served, not dropped. That matters when
	// the listening socket is shared with a successor (an upgrade): the
	// client's connection was accepted by the kernel and nobody else will
	// answer it.
	serveWG sync.WaitGroup

	// force is closed when sessions must end now (Close, or Shutdown's
	// deadline): each session tells its client 421 and closes.
	force     chan struct{}
	forceOnce sync.Once
}

// New returns a Server for cfg.
func New(cfg Config) *Server {
	cfg = cfg.withDefaults()
	srv := &Server{
		adm:       newAdmission(&cfg),
		listeners: make(map[net.Listener]struct{}),
		sessions:  make(map[*session]struct{}),
		force:     make(chan struct{}),
	}
	srv.cfg.Store(&cfg)
	cfg.Metrics.attach(srv)
	return srv
}

// config returns the configuration new sessions start with.
func (srv *Server) config() *Config { return srv.cfg.Load() }

// Reconfigure makes cfg the configuration of the sessions that start from
// now on; a running session keeps the one it started with, so nothing in
// progress is cut. Access lists, session limits and the ban settings apply
// at once to every new connection; the bans and failure counts recorded so
// far, and the sessions counted against the limits, are kept. Metrics
// must be the one the Server was made with.
func (srv *Server) Reconfigure(cfg Config) {
	cfg = cfg.withDefaults()
	srv.cfg.Store(&cfg)
	srv.adm.reconfigure(&cfg)
}

// Serve accepts connections on ln until Shutdown or Close, and returns
// ErrServerClosed then. Temporary accept errors (out of file descriptors)
// are retried with a backoff rather than ending the loop.
func (srv *Server) Serve(ln net.Listener) error { return srv.serve(ln, false) }

// ServeImplicitTLS is Serve for implicit FTPS (port 990 by convention):
// every connection starts with a TLS handshake, after its PROXY header if
// it has one, before the greeting. It needs Config.TLS.
func (srv *Server) ServeImplicitTLS(ln net.Listener) error {
	if srv.config().TLS == nil {
		return errors.New("proxy: implicit TLS needs Config.TLS")
	}
	return srv.serve(ln, true)
}

func (srv *Server) serve(ln net.Listener, implicit bool) error {
	if !srv.trackListener(ln, true) {
		return ErrServerClosed
	}
	defer srv.trackListener(ln, false)
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if srv.closed.Load() || errors.Is(err, net.ErrClosed) {
				return ErrServerClosed
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			srv.config().Logger.Warn().Err(err).Dur("retry_in", backoff).Msg("accept failed")
			select {
			case <-time.After(backoff):
			case <-srv.force:
				return ErrServerClosed
			}
			continue
		}
		backoff = 0
		s := newSession(srv, c)
		s.implicit = implicit
		srv.trackSession(s, true)
		go func() {
			defer srv.trackSession(s, false)
			s.serve()
		}()
	}
}

// Accepting reports whether the server takes new sessions: true until
// Shutdown or Close. Health checks answer by it, so that a load balancer
// moves new sessions elsewhere while this instance drains.
func (srv *Server) Accepting() bool { return !srv.closed.Load() }

// Sessions returns the number of sessions running now.
func (srv *Server) Sessions() int {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return len(srv.sessions)
}

// Shutdown stops accepting new connections and waits for the running
// sessions to end by themselves. When ctx is done first, the remaining
// sessions are told 421 and closed, and Shutdown returns ctx's error once
// they are gone.
func (srv *Server) Shutdown(ctx context.Context) error {
	srv.closeListeners()
	srv.serveWG.Wait()
	done := make(chan struct{})
	go func() {
		srv.sessWG.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		srv.forceOnce.Do(func() { close(srv.force) })
		<-done
		return ctx.Err()
	}
}

// Close stops accepting, ends every session at once and waits for them.
func (srv *Server) Close() error {
	srv.closeListeners()
	srv.forceOnce.Do(func() { close(srv.force) })
	srv.serveWG.Wait()
	srv.sessWG.Wait()
	return nil
}

func (srv *Server) closeListeners() {
	srv.closed.Store(true)
	srv.mu.Lock()
	defer srv.mu.Unlock()
	for ln := range srv.listeners {
		ln.Close()
	}
	clear(srv.listeners)
}

// trackListener adds ln and its accept loop, unless the server is closed,
// or removes them.
func (srv *Server) trackListener(ln net.Listener, add bool) bool {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if !add {
		delete(srv.listeners, ln)
		srv.serveWG.Done()
		return true
	}
	if srv.closed.Load() {
		return false
	}
	srv.listeners[ln] = struct{}{}
	srv.serveWG.Add(1)
	return true
}

// trackSession adds or removes s. Only an accept loop adds, and Shutdown
// and Close wait for the loops before they wait for the sessions, so a
// session added while they close is still waited for.
func (srv *Server) trackSession(s *session, add bool) {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if !add {
		delete(srv.sessions, s)
		srv.sessWG.Done()
		return
	}
	srv.sessions[s] = struct{}{}
	srv.sessWG.Add(1)
}
