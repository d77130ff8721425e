#!/usr/bin/env python3
"""Paced FTP transfer with Python's ftplib, for the fault suite.

One invocation logs in, moves one file at about --rate bytes per second
(0: as fast as it can) and exits 0 only if the server's final reply was a
2xx; it prints "final <code>" with that reply code on stdout. A slow
transfer leaves the suite time to kill the process mid-transfer.

  slow_ftplib.py --host H --port P --user U --password W --source IP
                 --mode pasv|epsv|port|eprt --rate N get REMOTE LOCAL
  slow_ftplib.py ... put LOCAL REMOTE
"""

import argparse
import ftplib
import sys
import time

BLOCK = 64 * 1024


class Client(ftplib.FTP):
    def __init__(self, mode, source, timeout):
        super().__init__(timeout=timeout, source_address=(source, 0) if source else None)
        self.mode = mode
        self.trust_server_pasv_ipv4_address = True

    def makepasv(self):
        if self.mode == "epsv":
            return ftplib.parse229(self.sendcmd("EPSV"), self.sock.getpeername())
        return ftplib.parse227(self.sendcmd("PASV"))

    def makeport(self):
        import socket

        local = self.sock.getsockname()[0]
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((local, 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        if self.mode == "eprt":
            self.voidcmd("EPRT |1|%s|%d|" % (local, port))
        else:
            self.voidcmd("PORT " + ",".join(local.split(".") + [str(port // 256), str(port % 256)]))
        sock.settimeout(self.timeout)
        return sock


class Pacer:
    def __init__(self, rate):
        self.rate = rate
        self.start = time.monotonic()
        self.n = 0

    def add(self, n):
        self.n += n
        if self.rate > 0:
            due = self.start + self.n / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--source", default="")
    p.add_argument("--mode", choices=["pasv", "epsv", "port", "eprt"], default="pasv")
    p.add_argument("--rate", type=int, default=0)
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("op", choices=["get", "put"])
    p.add_argument("a")
    p.add_argument("b")
    args = p.parse_args()

    c = Client(args.mode, args.source, args.timeout)
    c.connect(args.host, args.port)
    c.login(args.user, args.password)
    c.set_pasv(args.mode in ("pasv", "epsv"))
    c.voidcmd("TYPE I")
    pacer = Pacer(args.rate)
    if args.op == "get":
        with open(args.b, "wb") as f:
            conn = c.transfercmd("RETR " + args.a)
            with conn:
                while True:
                    data = conn.recv(BLOCK)
                    if not data:
                        break
                    f.write(data)
                    f.flush()
                    pacer.add(len(data))
    else:
        with open(args.a, "rb") as f:
            conn = c.transfercmd("STOR " + args.b)
            with conn:
                while True:
                    data = f.read(BLOCK)
                    if not data:
                        break
                    conn.sendall(data)
                    pacer.add(len(data))
    resp = c.getresp()  # raises on 4xx/5xx
    print("final " + resp[:3])
    try:
        c.quit()
    except Exception:
        c.close()


if __name__ == "__main__":
    try:
        main()
    except ftplib.all_errors as e:
        print("final " + str(e)[:3], file=sys.stdout)
        print("error: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        sys.exit(1)
