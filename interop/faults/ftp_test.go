//go:build interop

package faults

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// reply is one FTP reply: its code and its text (all lines).
type reply struct {
	code int
	text string
}

func (r reply) String() string { return strings.ReplaceAll(r.text, "\n", " | ") }

// ftpClient is a minimal FTP client with exact control over its sockets,
// so that a test can reset or abandon them at a chosen byte and see the
// exact final reply of every transfer.
type ftpClient struct {
	conn    *net.TCPConn
	r       *bufio.Reader
	src     string
	timeout time.Duration
}

// dialFTP connects from src to addr and reads the greeting.
func dialFTP(addr, src string, timeout time.Duration) (*ftpClient, reply, error) {
	d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, reply{}, err
	}
	f := &ftpClient{conn: c.(*net.TCPConn), r: bufio.NewReader(c), src: src, timeout: timeout}
	rep, err := f.read()
	if err != nil {
		c.Close()
		return nil, rep, fmt.Errorf("greeting: %w", err)
	}
	return f, rep, nil
}

// close closes the control connection.
func (f *ftpClient) close() { f.conn.Close() }

// reset closes the control connection with a TCP reset.
func (f *ftpClient) reset() {
	f.conn.SetLinger(0)
	f.conn.Close()
}

// quit sends QUIT, waits briefly for 221 and closes.
func (f *ftpClient) quit() {
	f.conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(f.conn, "QUIT\r\n")
	f.read()
	f.conn.Close()
}

// read reads one (possibly multi-line) reply.
func (f *ftpClient) read() (reply, error) {
	f.conn.SetReadDeadline(time.Now().Add(f.timeout))
	line, err := f.r.ReadString('\n')
	if err != nil {
		return reply{}, err
	}
	line = strings.TrimRight(line, "\r\n")
	if len(line) < 3 {
		return reply{}, fmt.Errorf("short reply line %q", line)
	}
	code, err := strconv.Atoi(line[:3])
	if err != nil {
		return reply{}, fmt.Errorf("bad reply line %q", line)
	}
	text := line
	if len(line) > 3 && line[3] == '-' {
		for {
			l, err := f.r.ReadString('\n')
			if err != nil {
				return reply{}, err
			}
			l = strings.TrimRight(l, "\r\n")
			text += "\n" + l
			if len(l) >= 4 && l[:3] == line[:3] && l[3] == ' ' {
				break
			}
		}
	}
	return reply{code: code, text: text}, nil
}

// cmd sends one command line and reads its reply.
func (f *ftpClient) cmd(format string, args ...any) (reply, error) {
	f.conn.SetWriteDeadline(time.Now().Add(f.timeout))
	if _, err := fmt.Fprintf(f.conn, format+"\r\n", args...); err != nil {
		// A peer that closed the connection may have said why first (a
		// 421); that reply is the answer the client gets.
		if r, rerr := f.read(); rerr == nil {
			return r, nil
		}
		return reply{}, err
	}
	return f.read()
}

// login sends USER and PASS and TYPE I; it fails unless the server says 230.
func (f *ftpClient) login(user, pass string) error {
	r, err := f.cmd("USER %s", user)
	if err != nil {
		return fmt.Errorf("USER: %w", err)
	}
	if r.code == 331 {
		if r, err = f.cmd("PASS %s", pass); err != nil {
			return fmt.Errorf("PASS: %w", err)
		}
	}
	if r.code != 230 {
		return fmt.Errorf("login: %s", r)
	}
	if r, err = f.cmd("TYPE I"); err != nil || r.code != 200 {
		return fmt.Errorf("TYPE I: %v %v", r, err)
	}
	return nil
}

var (
	pasvRe = regexp.MustCompile(`\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)`)
	epsvRe = regexp.MustCompile(`\(\|\|\|(\d+)\|\)`)
)

// dataSetup is a data connection being prepared: for passive modes the
// address to dial, for active modes the listener the server connects to.
type dataSetup struct {
	passive bool
	addr    string
	ln      *net.TCPListener
	src     string
	timeout time.Duration
}

// setupData sends PASV, EPSV, PORT or EPRT.
func (f *ftpClient) setupData(mode string) (*dataSetup, reply, error) {
	ds := &dataSetup{src: f.src, timeout: f.timeout}
	switch mode {
	case "pasv":
		r, err := f.cmd("PASV")
		if err != nil || r.code != 227 {
			return nil, r, fmt.Errorf("PASV: %v %v", r, err)
		}
		m := pasvRe.FindStringSubmatch(r.text)
		if m == nil {
			return nil, r, fmt.Errorf("PASV reply %q", r.text)
		}
		p1, _ := strconv.Atoi(m[5])
		p2, _ := strconv.Atoi(m[6])
		ds.passive = true
		ds.addr = net.JoinHostPort(strings.Join(m[1:5], "."), strconv.Itoa(p1*256+p2))
		return ds, r, nil
	case "epsv":
		r, err := f.cmd("EPSV")
		if err != nil || r.code != 229 {
			return nil, r, fmt.Errorf("EPSV: %v %v", r, err)
		}
		m := epsvRe.FindStringSubmatch(r.text)
		if m == nil {
			return nil, r, fmt.Errorf("EPSV reply %q", r.text)
		}
		host, _, _ := net.SplitHostPort(f.conn.RemoteAddr().String())
		ds.passive = true
		ds.addr = net.JoinHostPort(host, m[1])
		return ds, r, nil
	case "port", "eprt":
		ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.ParseIP(f.src)})
		if err != nil {
			return nil, reply{}, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		var r reply
		if mode == "port" {
			r, err = f.cmd("PORT %s,%d,%d", strings.ReplaceAll(f.src, ".", ","), port/256, port%256)
		} else {
			r, err = f.cmd("EPRT |1|%s|%d|", f.src, port)
		}
		if err != nil || r.code != 200 {
			ln.Close()
			return nil, r, fmt.Errorf("%s: %v %v", strings.ToUpper(mode), r, err)
		}
		ds.ln = ln
		return ds, r, nil
	}
	return nil, reply{}, fmt.Errorf("unknown mode %q", mode)
}

// dial opens a passive data connection (before the transfer command, as
// ftplib and curl do).
func (ds *dataSetup) dial() (*net.TCPConn, error) {
	d := net.Dialer{Timeout: ds.timeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ds.src)}}
	c, err := d.Dial("tcp", ds.addr)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// accept takes the active data connection.
func (ds *dataSetup) accept() (*net.TCPConn, error) {
	ds.ln.SetDeadline(time.Now().Add(ds.timeout))
	c, err := ds.ln.AcceptTCP()
	ds.ln.Close()
	return c, err
}

func (ds *dataSetup) close() {
	if ds.ln != nil {
		ds.ln.Close()
	}
}

// Client-side faults a transfer can inject at faultAt bytes.
const (
	faultNone      = ""
	faultKill      = "kill"      // reset control and data, as a killed client process
	faultResetData = "resetdata" // reset the data connection, then read the reply
	faultResetCtl  = "resetctl"  // reset the control connection, finish the data
)

// xferOpts shapes one transfer.
type xferOpts struct {
	mode    string
	rate    int64  // bytes per second, 0: as fast as possible
	hookAt  int64  // when this many bytes have moved, hook runs (once, synchronously)
	hook    func() // nil: none
	fault   string
	faultAt int64
}

// xferResult is what the client saw of one transfer.
type xferResult struct {
	verb, name, mode string
	code             int    // final reply after the data (0: none)
	text             string // its text
	prelim           int    // the 1xx reply, if any
	n                int64  // bytes the client received (RETR) or sent (STOR)
	sum              string // sha256 of the bytes received (RETR)
	err              error  // client-side error, if any
	fault            string // the client-side fault injected, if it fired
}

func (x xferResult) String() string {
	s := fmt.Sprintf("%s %s %s: %d bytes", x.verb, x.name, x.mode, x.n)
	if x.code != 0 {
		s += fmt.Sprintf(", reply %q", x.text)
	} else {
		s += ", no final reply"
	}
	if x.fault != "" {
		s += ", fault " + x.fault
	}
	if x.err != nil {
		s += fmt.Sprintf(", client error: %v", x.err)
	}
	return s
}

// pacer sleeps so that n bytes over the elapsed time stay under rate.
type pacer struct {
	rate  int64
	start time.Time
}

func (p *pacer) wait(total int64) {
	if p.rate <= 0 {
		return
	}
	want := time.Duration(float64(total) / float64(p.rate) * float64(time.Second))
	if d := want - time.Since(p.start); d > 0 {
		time.Sleep(d)
	}
}

// openData completes a data connection around the transfer command verb:
// passive modes dial before sending it, active ones accept after its 1xx.
// It returns the connection, or the final reply if the command was refused.
func (f *ftpClient) openData(o xferOpts, line string, res *xferResult) (*net.TCPConn, bool) {
	ds, r, err := f.setupData(o.mode)
	if err != nil {
		res.code, res.text, res.err = r.code, r.text, err
		return nil, false
	}
	defer ds.close()
	var data *net.TCPConn
	if ds.passive {
		if data, err = ds.dial(); err != nil {
			res.err = fmt.Errorf("data dial: %w", err)
			// The command is still sent, so that the reply shows what the
			// proxy makes of it.
		}
	}
	r, err = f.cmd("%s", line)
	if err != nil {
		res.err = errors.Join(res.err, fmt.Errorf("%s: %w", line, err))
		if data != nil {
			data.Close()
		}
		return nil, false
	}
	if r.code >= 200 {
		res.code, res.text = r.code, r.text
		if data != nil {
			data.Close()
		}
		return nil, false
	}
	res.prelim = r.code
	if data == nil && !ds.passive {
		if data, err = ds.accept(); err != nil {
			res.err = fmt.Errorf("data accept: %w", err)
		}
	}
	if data == nil {
		f.finalReply(res)
		return nil, false
	}
	return data, true
}

// finalReply reads the reply that ends a transfer into res.
func (f *ftpClient) finalReply(res *xferResult) {
	r, err := f.read()
	if err != nil {
		res.err = errors.Join(res.err, fmt.Errorf("final reply: %w", err))
		return
	}
	res.code, res.text = r.code, r.text
}

// retr downloads name, hashing what arrives.
func (f *ftpClient) retr(name string, o xferOpts) xferResult {
	res := xferResult{verb: "RETR", name: name, mode: o.mode}
	data, ok := f.openData(o, "RETR "+name, &res)
	if !ok {
		return res
	}
	h := sha256.New()
	buf := make([]byte, 64<<10)
	pc := pacer{rate: o.rate, start: time.Now()}
	hooked := o.hook == nil
	for {
		if !hooked && res.n >= o.hookAt {
			hooked = true
			o.hook()
		}
		if o.fault != faultNone && res.fault == "" && res.n >= o.faultAt {
			res.fault = o.fault
			switch o.fault {
			case faultKill:
				data.SetLinger(0)
				data.Close()
				f.reset()
				res.sum = hex.EncodeToString(h.Sum(nil))
				return res
			case faultResetData:
				data.SetLinger(0)
				data.Close()
				res.sum = hex.EncodeToString(h.Sum(nil))
				f.finalReply(&res)
				return res
			case faultResetCtl:
				f.reset()
			}
		}
		chunk := buf
		if o.rate > 0 {
			chunk = buf[:min(len(buf), int(max(o.rate/20, 4096)))]
		}
		data.SetReadDeadline(time.Now().Add(f.timeout))
		n, err := data.Read(chunk)
		h.Write(chunk[:n])
		res.n += int64(n)
		if err != nil {
			if err != io.EOF {
				res.err = fmt.Errorf("data read: %w", err)
			}
			break
		}
		pc.wait(res.n)
	}
	data.Close()
	res.sum = hex.EncodeToString(h.Sum(nil))
	if res.fault == faultResetCtl {
		return res
	}
	f.finalReply(&res)
	return res
}

// stor uploads the file at path as name.
func (f *ftpClient) stor(name, path string, o xferOpts) xferResult {
	res := xferResult{verb: "STOR", name: name, mode: o.mode}
	src, err := os.Open(path)
	if err != nil {
		res.err = err
		return res
	}
	defer src.Close()
	data, ok := f.openData(o, "STOR "+name, &res)
	if !ok {
		return res
	}
	buf := make([]byte, 64<<10)
	pc := pacer{rate: o.rate, start: time.Now()}
	hooked := o.hook == nil
	var h hash.Hash = sha256.New()
	for {
		if !hooked && res.n >= o.hookAt {
			hooked = true
			o.hook()
		}
		if o.fault != faultNone && res.fault == "" && res.n >= o.faultAt {
			res.fault = o.fault
			switch o.fault {
			case faultKill:
				data.SetLinger(0)
				data.Close()
				f.reset()
				return res
			case faultResetData:
				data.SetLinger(0)
				data.Close()
				f.finalReply(&res)
				return res
			case faultResetCtl:
				f.reset()
			}
		}
		chunk := buf
		if o.rate > 0 {
			chunk = buf[:min(len(buf), int(max(o.rate/20, 4096)))]
		}
		n, rerr := src.Read(chunk)
		if n > 0 {
			data.SetWriteDeadline(time.Now().Add(f.timeout))
			w, werr := data.Write(chunk[:n])
			h.Write(chunk[:w])
			res.n += int64(w)
			if werr != nil {
				res.err = fmt.Errorf("data write: %w", werr)
				break
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			res.err = rerr
			break
		}
		pc.wait(res.n)
	}
	data.Close()
	res.sum = hex.EncodeToString(h.Sum(nil))
	if res.fault == faultResetCtl {
		return res
	}
	f.finalReply(&res)
	return res
}
