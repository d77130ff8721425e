#!/usr/bin/env python3
"""FTP client driver for the interop suite, built on Python's ftplib.

One invocation opens one session (or, for "concurrent", many), performs a
single operation and exits 0 on success. Results that the suite checks are
printed on stdout; errors go to stderr with a non-zero exit status.

Modes:
  pasv  passive data connections with PASV
  epsv  passive data connections with EPSV
  port  active data connections with PORT
  eprt  active data connections with EPRT

FTPS (RFC 4217): with --tls explicit the session sends AUTH TLS before the
login (ftplib.FTP_TLS), then PBSZ 0 and PROT P, so that every data
connection is TLS too. The server's certificate is verified against the CA
certificates in --cafile, host name included; --tls needs --cafile.
ftplib opens each data connection with a full TLS handshake: it does not
resume the control connection's TLS session.

Operations (paths are relative to the login directory):
  pwd                       print the working directory
  cwd DIR                   CWD DIR, then print the working directory
  list [DIR]                LIST, raw lines
  nlst [DIR]                NLST, one name a line
  mlsd [DIR]                MLSD, one name a line
  get REMOTE LOCAL [REST]   RETR into LOCAL; with REST, resume at that offset
                            (LOCAL is truncated to REST and appended to)
  put LOCAL REMOTE [REST]   STOR from LOCAL; with REST, send REST N and the
                            bytes of LOCAL from offset N
  append LOCAL REMOTE       APPE LOCAL's bytes to REMOTE
  mkd DIR | rmd DIR | dele FILE | rename FROM TO
  size FILE                 print SIZE's answer
  mdtm FILE                 print MDTM's answer (YYYYMMDDHHMMSS)
  getmany REMOTE LOCAL [REMOTE LOCAL ...]
                            several RETRs in one session
  putmany LOCAL REMOTE [LOCAL REMOTE ...]
                            several STORs in one session
  concurrent N BYTES DIR    N sessions in parallel, each storing BYTES random
                            bytes as DIR/c<i>.bin, reading them back and
                            comparing; prints "<name> <sha256>" per session
"""

import argparse
import ftplib
import hashlib
import os
import socket
import ssl
import sys
import threading

BLOCK = 256 * 1024


class Client(ftplib.FTP):
    """ftplib.FTP that can be told which data-connection command to use."""

    def __init__(self, mode, source, timeout):
        super().__init__(timeout=timeout, source_address=(source, 0) if source else None)
        self.mode = mode
        # Use the address the server announces in PASV instead of the
        # control connection's peer: the suite wants to see the announced
        # (rewritten) address work.
        self.trust_server_pasv_ipv4_address = True

    def makepasv(self):
        if self.mode == "epsv":
            host, port = ftplib.parse229(self.sendcmd("EPSV"), self.sock.getpeername())
            return host, port
        if self.mode == "pasv":
            host, port = ftplib.parse227(self.sendcmd("PASV"))
            return host, port
        return super().makepasv()

    def makeport(self):
        # Listen on the control connection's local address, as a client
        # behind no NAT would.
        local = self.sock.getsockname()[0]
        fam = self.af
        sock = socket.socket(fam, socket.SOCK_STREAM)
        sock.bind((local, 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        if self.mode == "eprt":
            af = 1 if fam == socket.AF_INET else 2
            self.voidcmd("EPRT |%d|%s|%d|" % (af, local, port))
        else:
            if fam != socket.AF_INET:
                raise ftplib.error_proto("PORT needs IPv4")
            hbytes = local.split(".")
            pbytes = [repr(port // 256), repr(port % 256)]
            self.voidcmd("PORT " + ",".join(hbytes + pbytes))
        if self.timeout is not None:
            sock.settimeout(self.timeout)
        return sock


class TLSClient(Client, ftplib.FTP_TLS):
    """Client over explicit FTPS: AUTH TLS before the login, TLS data
    connections after PROT P, the server verified with context."""

    def __init__(self, mode, source, timeout, context):
        super().__init__(mode, source, timeout)
        self.context = context


def tls_context(cafile):
    """A client context that verifies the chain against cafile only, and
    the host name (an IP address is matched against the certificate's IP
    addresses)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def connect(args):
    if args.tls == "explicit":
        c = TLSClient(args.mode, args.source, args.timeout, tls_context(args.cafile))
    else:
        c = Client(args.mode, args.source, args.timeout)
    c.connect(args.host, args.port)
    c.login(args.user, args.password)  # FTP_TLS.login sends AUTH TLS first
    if args.tls == "explicit":
        c.prot_p()
    c.set_pasv(args.mode in ("pasv", "epsv"))
    return c


def op_get(c, remote, local, rest=None):
    if rest is None:
        with open(local, "wb") as f:
            c.retrbinary("RETR " + remote, f.write, BLOCK)
        return
    rest = int(rest)
    with open(local, "r+b" if os.path.exists(local) else "wb") as f:
        f.truncate(rest)
        f.seek(rest)
        c.retrbinary("RETR " + remote, f.write, BLOCK, rest=rest)


def op_put(c, local, remote, rest=None):
    with open(local, "rb") as f:
        if rest is None:
            c.storbinary("STOR " + remote, f, BLOCK)
        else:
            rest = int(rest)
            f.seek(rest)
            c.storbinary("STOR " + remote, f, BLOCK, rest=rest)


def op_append(c, local, remote):
    with open(local, "rb") as f:
        c.storbinary("APPE " + remote, f, BLOCK)


def op_concurrent(args, n, nbytes, directory):
    n, nbytes = int(n), int(nbytes)
    results = [None] * n
    errors = []

    def worker(i):
        try:
            data = os.urandom(nbytes)
            name = "%s/c%d.bin" % (directory, i)
            c = connect(args)
            try:
                import io

                c.storbinary("STOR " + name, io.BytesIO(data), BLOCK)
                got = bytearray()
                c.retrbinary("RETR " + name, got.extend, BLOCK)
            finally:
                try:
                    c.quit()
                except Exception:
                    c.close()
            if bytes(got) != data:
                raise RuntimeError("%s: read back %d bytes, differ from the %d stored" % (name, len(got), len(data)))
            results[i] = "%s %s" % (name, hashlib.sha256(data).hexdigest())
        except Exception as e:  # reported below, all of them
            errors.append("session %d: %s: %s" % (i, type(e).__name__, e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        for e in errors:
            print(e, file=sys.stderr)
        sys.exit(1)
    for r in results:
        print(r)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, default=21)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--source", default="", help="local address to bind")
    p.add_argument("--mode", choices=["pasv", "epsv", "port", "eprt"], default="pasv")
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("--tls", choices=["off", "explicit"], default="off")
    p.add_argument("--cafile", default="", help="CA certificates that verify the server (with --tls)")
    p.add_argument("op")
    p.add_argument("args", nargs="*")
    args = p.parse_args()
    if args.tls != "off" and not args.cafile:
        p.error("--tls needs --cafile: the server's certificate is always verified")

    if args.op == "concurrent":
        op_concurrent(args, *args.args)
        return

    c = connect(args)
    try:
        a = args.args
        if args.op == "pwd":
            print(c.pwd())
        elif args.op == "cwd":
            c.cwd(a[0])
            print(c.pwd())
        elif args.op == "list":
            c.retrlines("LIST" + (" " + a[0] if a else ""), print)
        elif args.op == "nlst":
            for n in c.nlst(*a):
                print(n)
        elif args.op == "mlsd":
            for name, _facts in c.mlsd(*a):
                print(name)
        elif args.op == "get":
            op_get(c, *a)
        elif args.op == "put":
            op_put(c, *a)
        elif args.op in ("getmany", "putmany"):
            if not a or len(a) % 2:
                print("%s takes pairs of paths" % args.op, file=sys.stderr)
                sys.exit(2)
            for i in range(0, len(a), 2):
                (op_get if args.op == "getmany" else op_put)(c, a[i], a[i + 1])
        elif args.op == "append":
            op_append(c, *a)
        elif args.op == "mkd":
            c.mkd(a[0])
        elif args.op == "rmd":
            c.rmd(a[0])
        elif args.op == "dele":
            c.delete(a[0])
        elif args.op == "rename":
            c.rename(a[0], a[1])
        elif args.op == "size":
            c.voidcmd("TYPE I")
            print(c.size(a[0]))
        elif args.op == "mdtm":
            print(c.voidcmd("MDTM " + a[0]).split()[1])
        else:
            print("unknown operation " + args.op, file=sys.stderr)
            sys.exit(2)
        c.quit()
    except ftplib.all_errors as e:
        print("%s: %s" % (type(e).__name__, e), file=sys.stderr)
        if not isinstance(e, ftplib.Error):
            print_final_reply(c)
        c.close()
        sys.exit(1)


def print_final_reply(c):
    """Print the reply that ends a transfer whose data connection failed:
    ftplib raises on the data connection before it reads that reply, which
    says why (a 425 or 426, say)."""
    if c.sock is None:
        return
    try:
        c.sock.settimeout(5)
        print("final reply: %s" % c.getresp(), file=sys.stderr)
    except ftplib.all_errors as e:
        print("final reply: %s: %s" % (type(e).__name__, e), file=sys.stderr)


if __name__ == "__main__":
    main()
