package proxy

import (
	"errors"

	"github.com/ftpproxy/ftpproxy/rewrite"
)

const replyNoTLS = "502 TLS is not offered by this proxy; continue without AUTH."

// replyTable maps what went wrong to the reply the client sees. The detail
// goes to the log; the reply says plainly what to do.
var replyTable = []struct {
	err   error
	reply string
}{
	{rewrite.ErrLineTooLong, "500 Command line too long."},
	{rewrite.ErrBadCommand, "500 Syntax error, command unrecognized."},
	{rewrite.ErrFamily, "522 Network protocol not supported, use (1,2)."},
	{rewrite.ErrSyntax, "501 Syntax error in parameters or arguments."},
	{rewrite.ErrAddress, "501 Syntax error in parameters or arguments: bad address."},
	{rewrite.ErrPort, "501 Syntax error in parameters or arguments: bad port."},
	// The usual cause is a client behind NAT announcing its private
	// address: passive mode is the fix every FTP guide gives.
	{errNotOwnAddress, "501 Active mode refused: the address in your command is not the one you connect from (NAT?); use passive mode."},
	{errPrivilegedPort, "501 Data connections to ports below 1024 are refused."},
	{errAfterEPSVAll, "503 Bad sequence of commands: only EPSV is allowed after EPSV ALL."},
	{errPASVOverIPv6, "522 PASV is not possible over IPv6, use EPSV (2)."},
	{errNoPassivePort, "425 Can't open data connection: no free passive port, try again later."},
	{errDataFailed, "425 Can't open data connection; send PASV or PORT again."},
	{errDataNotResumed, replyDataNotResumed},
	{errDataTLS, replyDataTLSFailed},
	{errDenied, "421 Access denied."},
	{errTooManySessions, "421 Too many sessions, try again later."},
	{errTooManyFromIP, "421 Too many sessions from your address, try again later."},
	{errBanned, "421 Too many failed logins from your address, try again later."},
}

// replyFor returns the client reply for err.
func replyFor(err error) string {
	for _, e := range replyTable {
		if errors.Is(err, e.err) {
			return e.reply
		}
	}
	return "425 Can't open data connection."
}
