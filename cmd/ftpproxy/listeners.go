package main

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/ftpproxy/ftpproxy/proxy"
)

// listenerSet is the proxy's listening sockets, by the address given in
// --listen and --listen-implicit, each served by a goroutine of its own.
// A reload opens the addresses added and retires the ones removed: a
// retired listener stops accepting at once and its sessions go on.
type listenerSet struct {
	srv *proxy.Server
	upg *upgrader
	wg  *sync.WaitGroup
	log zerolog.Logger

	mu       sync.Mutex
	plain    map[string]*retiringListener
	implicit map[string]*retiringListener
}

// retiringListener reports the end of a listener that a reload retired as
// net.ErrClosed, the clean stop Serve expects, whatever error the shutdown
// gave its Accept first.
type retiringListener struct {
	net.Listener
	retired atomic.Bool
}

func (l *retiringListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil && l.retired.Load() {
		return nil, net.ErrClosed
	}
	return c, err
}

func newListenerSet(srv *proxy.Server, upg *upgrader, wg *sync.WaitGroup, log zerolog.Logger) *listenerSet {
	return &listenerSet{srv: srv, upg: upg, wg: wg, log: log,
		plain: make(map[string]*retiringListener), implicit: make(map[string]*retiringListener)}
}

// openAll opens every address, or none: on an error the ones opened are
// closed again.
func (ls *listenerSet) openAll(plain, implicit []string) error {
	for _, a := range plain {
		if err := ls.open(a, false); err != nil {
			ls.closeAll()
			return fmt.Errorf("--listen %s: %w", a, err)
		}
	}
	for _, a := range implicit {
		if err := ls.open(a, true); err != nil {
			ls.closeAll()
			return fmt.Errorf("--listen-implicit %s: %w", a, err)
		}
	}
	return nil
}

// open listens on addr and serves it.
func (ls *listenerSet) open(addr string, implicit bool) error {
	l, err := ls.upg.listen(addr)
	if err != nil {
		return err
	}
	ln := &retiringListener{Listener: l}
	ls.mu.Lock()
	set := ls.plain
	serve := ls.srv.Serve
	if implicit {
		set, serve = ls.implicit, ls.srv.ServeImplicitTLS
	}
	set[addr] = ln
	ls.mu.Unlock()
	ls.log.Info().Str("listen", ln.Addr().String()).Bool("implicit_tls", implicit).Str("version", versionString()).Msg("ftpproxy listening")
	ls.wg.Go(func() {
		if err := serve(ln); err != nil && !errors.Is(err, proxy.ErrServerClosed) {
			ls.log.Error().Err(err).Str("listen", ln.Addr().String()).Msg("listener stopped")
		}
	})
	return nil
}

// update opens the addresses that are new and retires the ones that are
// gone, for a reload.
func (ls *listenerSet) update(plain, implicit []string, log zerolog.Logger) {
	ls.mu.Lock()
	ls.log = log
	ls.mu.Unlock()
	for _, kind := range []struct {
		want     []string
		implicit bool
	}{{plain, false}, {implicit, true}} {
		ls.mu.Lock()
		set := ls.plain
		if kind.implicit {
			set = ls.implicit
		}
		var gone []string
		for a := range set {
			if !slices.Contains(kind.want, a) {
				gone = append(gone, a)
			}
		}
		ls.mu.Unlock()
		for _, a := range gone {
			ls.retire(a, kind.implicit)
		}
		for _, a := range kind.want {
			ls.mu.Lock()
			_, have := set[a]
			ls.mu.Unlock()
			if have {
				continue
			}
			if err := ls.open(a, kind.implicit); err != nil {
				log.Error().Err(err).Str("listen", a).Msg("reload: cannot listen on an added address")
			}
		}
	}
}

// retire stops accepting on addr for good, here and in any copy of the
// socket (the upgrader keeps one for a successor): shutdown takes the
// socket out of the listening state, which a close of one copy would not.
func (ls *listenerSet) retire(addr string, implicit bool) {
	ls.mu.Lock()
	set := ls.plain
	if implicit {
		set = ls.implicit
	}
	ln := set[addr]
	delete(set, addr)
	ls.mu.Unlock()
	if ln == nil {
		return
	}
	ln.retired.Store(true)
	if sc, ok := ln.Listener.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			raw.Control(func(fd uintptr) { syscall.Shutdown(int(fd), syscall.SHUT_RD) })
		}
	}
	ln.Close()
	ls.log.Info().Str("listen", addr).Msg("listener removed by a reload: no new sessions on it; its sessions go on")
}

func (ls *listenerSet) closeAll() {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	for _, set := range []map[string]*retiringListener{ls.plain, ls.implicit} {
		for a, ln := range set {
			ln.Close()
			delete(set, a)
		}
	}
}

// addrs returns the addresses listened on now.
func (ls *listenerSet) addrs() (plain, implicit []string) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	for a := range ls.plain {
		plain = append(plain, a)
	}
	for a := range ls.implicit {
		implicit = append(implicit, a)
	}
	return plain, implicit
}

// logger returns the logger the set logs with now.
func (ls *listenerSet) logger() zerolog.Logger {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.log
}
