#!/usr/bin/env python3
"""A passive-mode FTP client that sends PROXY v1 headers itself.

It plays a load balancer and its client in one: every connection it opens
to the proxy, the control connection and each data connection, starts
with "PROXY TCP4 <claim> <host> <port> <port>\r\n", claiming the address
--claim for the client. ftpproxy, started with --proxy-protocol-from
covering --source, takes the client's address from the header on the
control connection and checks each data connection's header against it.

Operations (one session each, PASV, binary):
  get REMOTE         RETR REMOTE; prints "<bytes> <sha256>"
  put LOCAL REMOTE   STOR LOCAL as REMOTE; prints "<bytes> <sha256>" sent

Exit status 0 on success; errors go to stderr with status 1.
"""

import argparse
import hashlib
import re
import socket
import sys


def header(claim, claim_port, host, port):
    return ("PROXY TCP4 %s %s %d %d\r\n" % (claim, host, claim_port, port)).encode()


class Control:
    def __init__(self, sock):
        self.sock = sock
        self.file = sock.makefile("rb")

    def reply(self):
        line = self.file.readline().decode("latin-1")
        if len(line) < 4:
            raise RuntimeError("short reply %r" % line)
        code, lines = line[:3], [line.rstrip("\r\n")]
        if line[3] == "-":
            while True:
                more = self.file.readline().decode("latin-1")
                if not more:
                    raise RuntimeError("control connection closed in a reply")
                lines.append(more.rstrip("\r\n"))
                if more.startswith(code + " "):
                    break
        return int(code), "\n".join(lines)

    def cmd(self, line, want):
        self.sock.sendall((line + "\r\n").encode())
        code, text = self.reply()
        # want: a reply code, or a single digit for any reply of that class.
        ok = code // 100 == want if want < 10 else code == want
        if not ok:
            raise RuntimeError("%s: %s" % (line.split()[0], text))
        return code, text


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--source", required=True, help="local address of every connection")
    ap.add_argument("--claim", required=True, help="the client address the headers claim")
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--timeout", type=float, default=30)
    ap.add_argument("op", choices=["get", "put"])
    ap.add_argument("args", nargs="+")
    a = ap.parse_args()

    def connect(port, claim_port):
        s = socket.create_connection((a.host, port), timeout=a.timeout, source_address=(a.source, 0))
        s.sendall(header(a.claim, claim_port, a.host, port))
        return s

    ctl = Control(connect(a.port, 40000))
    code, text = ctl.reply()
    if code != 220:
        raise RuntimeError("greeting: " + text)
    ctl.cmd("USER " + a.user, 331)
    ctl.cmd("PASS " + a.password, 230)
    ctl.cmd("TYPE I", 200)
    _, text = ctl.cmd("PASV", 227)
    m = re.search(r"\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)", text)
    if not m:
        raise RuntimeError("no address in " + text)
    dport = int(m.group(5)) * 256 + int(m.group(6))
    data = connect(dport, 40001)
    h = hashlib.sha256()
    n = 0
    if a.op == "get":
        ctl.cmd("RETR " + a.args[0], 1)
        while True:
            b = data.recv(1 << 16)
            if not b:
                break
            h.update(b)
            n += len(b)
        data.close()
    else:
        ctl.cmd("STOR " + a.args[1], 1)
        with open(a.args[0], "rb") as f:
            while True:
                b = f.read(1 << 16)
                if not b:
                    break
                data.sendall(b)
                h.update(b)
                n += len(b)
        data.shutdown(socket.SHUT_WR)
        # Until the far end closes: closing with unread bytes would reset.
        while data.recv(1 << 16):
            pass
        data.close()
    code, text = ctl.reply()
    if code != 226:
        raise RuntimeError("after the transfer: " + text)
    ctl.cmd("QUIT", 221)
    print(n, h.hexdigest())


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - the suite reads stderr
        print("proxyhdr_client: %s" % e, file=sys.stderr)
        sys.exit(1)
