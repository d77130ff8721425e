// Package proxy is ftpproxy's session layer: it accepts FTP control
// connections, relays them to one upstream server command by command, and
// opens the data connections that PASV, EPSV, PORT and EPRT announce, so that
// transfers work through the proxy in passive and active mode.
//
//	srv := proxy.New(proxy.Config{Upstream: "10.0.0.5:21", Logger: log})
//	ln, _ := net.Listen("tcp", ":2121")
//	go srv.Serve(ln)
//	...
//	srv.Shutdown(ctx) // stop accepting, let sessions end, then close them
//
// A session is a small state machine driven by three event sources: command
// lines from the client, replies from the upstream, and the completion of
// data transfers. Every command forwarded upstream is queued with what must
// happen to its final reply: relayed as is, rewritten (PASV and EPSV), or
// held until the data relay has delivered its last byte (RETR, STOR, LIST
// and the other transfer commands). Replies the proxy makes itself take their
// place in the same queue, so the client always sees replies in the order of
// its commands.
package proxy
