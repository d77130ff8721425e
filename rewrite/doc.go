// Package rewrite parses and formats the text ftpproxy reads and writes on
// FTP control connections: command lines, replies, and the addresses inside
// PORT, EPRT, PASV and EPSV exchanges. It holds no sockets, does no DNS and
// starts no goroutines, so every function here can be tested and fuzzed on
// its own; package proxy owns the connections and calls in.
//
// Reading a client's command:
//
//	lr := rewrite.NewLineReader(conn, 4096)
//	line, err := lr.ReadLine()           // without CRLF; bounded by max
//	cmd, err := rewrite.ParseCommand(rewrite.StripTelnet(line))
//	log.Print(cmd.Redacted())            // "PASS ****"
//	_, err = server.Write(cmd.AppendWire(buf[:0])) // 0xFF escaped again, CRLF
//
// Relaying a server's reply as it arrives, in chunks bounded in lines and
// bytes:
//
//	rr := rewrite.NewReplyReader(rewrite.NewLineReader(server, 4096), 64, 100000)
//	rr.SetChunkBytes(64 << 10)
//	for {
//		r, err := rr.ReadReply()
//		if err != nil {
//			return err
//		}
//		// write r.Lines to the client, each followed by CRLF
//		if !r.More {
//			break
//		}
//	}
//
// Rewriting addresses:
//
//	ap, err := rewrite.ParsePASVReply("227 Entering Passive Mode (10,0,0,5,4,1).")
//	// ap == 10.0.0.5:1025
//	reply, err := rewrite.FormatPASVReply(netip.MustParseAddrPort("203.0.113.7:21000"))
//	// reply == "227 Entering Passive Mode (203,0,113,7,82,8)."
//
// Every error returned by this package wraps one of the sentinel errors
// below, so callers pick the FTP reply code with errors.Is.
package rewrite
