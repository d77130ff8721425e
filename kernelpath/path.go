// Package kernelpath lets the kernel carry plain passive FTP data
// connections: for each transfer the proxy adds an element to a map in its
// own nftables table, so that the client's next connection to the
// announced port is DNATed to the upstream's passive address (and SNATed
// to the proxy's upstream-side address), and watches the flow with
// conntrack: when it opens, how many bytes it carries, how it ends. No
// process touches the data.
//
// The table, "inet <name>", holds per address family a keys map (client
// address . announced port -> the flow's conntrack mark), a dnat map (mark
// -> upstream address . port) and an snat map (mark -> proxy address);
// the packet path deletes the key it used, so a redirect serves one
// connection. A forward chain lets through the flows it redirected and,
// when guarding, drops every other forwarded packet, so that enabling
// forwarding for the proxy does not make the host a router; a dead set
// makes the filter chains reset a flow the proxy ends.
package kernelpath

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/rs/zerolog"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"
)

// Config is how Open sets the path up.
type Config struct {
	// Table is the name of the proxy's nftables table (family inet).
	// Default "ftpproxy". Instances sharing a host need a name each.
	Table string
	// Guard makes the forward chain drop every forwarded packet that is
	// not part of a flow the proxy redirected.
	Guard bool
	// Keep leaves an existing table as it is instead of rebuilding it:
	// for a process that takes over from another during an upgrade,
	// whose redirects still wait for their connections.
	Keep bool
	// Log receives the path's own events (a lost conntrack event stream).
	Log zerolog.Logger
}

// Path is an open kernel data path.
type Path struct {
	log   zerolog.Logger
	table *nftables.Table
	sets  *sets

	nftMu sync.Mutex
	nft   *nftables.Conn

	ct     *conntrack.Conn // queries
	events *conntrack.Conn // the event stream
	evs    chan conntrack.Event
	stop   chan struct{}
	wg     sync.WaitGroup

	v4, v6 bool // forwarding is on for the family

	mu     sync.Mutex
	flows  map[uint32]*Flow
	nextID uint32
	closed bool
}

// Open checks that the host can carry data connections in the kernel (the
// capability, conntrack with accounting, forwarding for at least one
// family), builds the table and starts following conntrack's events. Its
// error says what is missing, for the log line of a proxy that then relays
// data itself.
func Open(cfg Config) (*Path, error) {
	if cfg.Table == "" {
		cfg.Table = "ftpproxy"
	}
	p := &Path{
		log:   cfg.Log,
		table: &nftables.Table{Name: cfg.Table, Family: nftables.TableFamilyINet},
		flows: make(map[uint32]*Flow),
		stop:  make(chan struct{}),
		evs:   make(chan conntrack.Event, 1024),
	}
	// Marks start at a random id, so a process that takes the table over
	// in an upgrade does not reuse the marks of the one still draining.
	var seed [4]byte
	rand.Read(seed[:])
	p.nextID = binary.LittleEndian.Uint32(seed[:]) & idMask
	p.v4 = sysctlIs("net/ipv4/ip_forward", "1")
	p.v6 = sysctlIs("net/ipv6/conf/all/forwarding", "1")
	if !p.v4 && !p.v6 {
		return nil, errors.New("kernelpath: the kernel forwards neither IPv4 nor IPv6 (sysctl net.ipv4.ip_forward=1, net.ipv6.conf.all.forwarding=1)")
	}
	var err error
	if p.sets, err = newSets(p.table); err != nil {
		return nil, err
	}
	if p.nft, err = nftables.New(nftables.AsLasting()); err != nil {
		return nil, fmt.Errorf("kernelpath: nftables: %w", err)
	}
	kept, err := p.buildTable(cfg)
	if err != nil {
		p.nft.CloseLasting()
		return nil, err
	}
	// Giving up leaves a table that another process uses as it was.
	giveUp := func(err error) (*Path, error) {
		if kept {
			p.nft.CloseLasting()
		} else {
			p.removeTable()
		}
		return nil, err
	}
	// Checked once the table exists: its NAT chains load conntrack if
	// nothing had.
	if acct, err := readSysctl("net/netfilter/nf_conntrack_acct"); err != nil {
		return giveUp(fmt.Errorf("kernelpath: conntrack is not available (%w)", err))
	} else if acct != "1" {
		return giveUp(errors.New("kernelpath: conntrack accounting is off (sysctl net.netfilter.nf_conntrack_acct=1)"))
	}
	if p.ct, err = conntrack.Dial(nil); err != nil {
		return giveUp(fmt.Errorf("kernelpath: conntrack: %w", err))
	}
	if err := p.listen(); err != nil {
		p.ct.Close()
		return giveUp(err)
	}
	p.wg.Go(p.dispatch)
	p.wg.Go(p.resync)
	return p, nil
}

// buildTable replaces any table of the same name (left by a proxy that
// crashed) with a fresh one; with cfg.Keep an existing one is used as it
// is, and kept says so.
func (p *Path) buildTable(cfg Config) (kept bool, err error) {
	p.nftMu.Lock()
	defer p.nftMu.Unlock()
	existing, err := p.nft.ListTableOfFamily(p.table.Name, p.table.Family)
	if err != nil && !errors.Is(err, unix.ENOENT) && !strings.Contains(err.Error(), "no such file") {
		if errors.Is(err, unix.EPERM) {
			return false, fmt.Errorf("kernelpath: not permitted to change nftables (needs CAP_NET_ADMIN): %w", err)
		}
		return false, fmt.Errorf("kernelpath: list nftables table %s: %w", p.table.Name, err)
	}
	if existing != nil && cfg.Keep {
		// This process joins the owners; the one it takes over from
		// takes itself out when it leaves (Close). Until then both are
		// listed, so that a takeover that fails leaves the table owned.
		if err := p.nft.AddSet(p.sets.owner, nil); err != nil { // an older table has none
			return false, fmt.Errorf("kernelpath: nftables table %s: %w", p.table.Name, err)
		}
		if err := p.nft.SetAddElements(p.sets.owner, pidElement(os.Getpid())); err != nil {
			return false, fmt.Errorf("kernelpath: nftables table %s: %w", p.table.Name, err)
		}
		if err := p.nft.Flush(); err != nil {
			return false, fmt.Errorf("kernelpath: take over nftables table %s: %w", p.table.Name, err)
		}
		return true, nil
	}
	if existing != nil {
		if pid := p.liveOwner(); pid != 0 {
			return false, fmt.Errorf("%w: table inet %s belongs to process %d, which is running: give each instance on a host its own --kernel-table", ErrTableInUse, p.table.Name, pid)
		}
		p.nft.DelTable(p.table)
	}
	if err := p.sets.build(p.nft, p.table, cfg.Guard); err != nil {
		return false, err
	}
	if err := p.nft.Flush(); err != nil {
		if errors.Is(err, unix.EPERM) {
			return false, fmt.Errorf("kernelpath: not permitted to change nftables (needs CAP_NET_ADMIN): %w", err)
		}
		return false, fmt.Errorf("kernelpath: create nftables table %s: %w", p.table.Name, err)
	}
	return false, nil
}

// ErrTableInUse is Open's error when another running process owns the
// table: the proxy then relays data itself and leaves the table alone.
var ErrTableInUse = errors.New("kernelpath: nftables table in use")

// liveOwner returns a process ID in the existing table's owner set if
// that process runs and is not this one, else 0: a table without an owner
// (an older proxy's) or whose owner is gone was left by a crash. (A process
// of another PID namespace sharing this network namespace is not seen.)
// The caller holds nftMu.
func (p *Path) liveOwner() int {
	set, err := p.nft.GetSetByName(p.table, ownerSet)
	if err != nil {
		return 0
	}
	els, err := p.nft.GetSetElements(set)
	if err != nil {
		return 0
	}
	for _, el := range els {
		if len(el.Key) != 4 {
			continue
		}
		pid := int(binaryutil.BigEndian.Uint32(el.Key))
		if pid <= 0 || pid == os.Getpid() {
			continue
		}
		if err := unix.Kill(pid, 0); err == nil || errors.Is(err, unix.EPERM) {
			return pid
		}
	}
	return 0
}

// listen opens the conntrack event stream.
func (p *Path) listen() error {
	ev, err := conntrack.Dial(nil)
	if err != nil {
		return fmt.Errorf("kernelpath: conntrack events: %w", err)
	}
	// A busy host makes many events; a large buffer keeps a burst from
	// overflowing the socket, and a lost event is made good by polling.
	ev.SetReadBuffer(8 << 20)
	errs, err := ev.Listen(p.evs, 1, []netfilter.NetlinkGroup{
		netfilter.GroupCTNew, netfilter.GroupCTUpdate, netfilter.GroupCTDestroy})
	if err != nil {
		ev.Close()
		return fmt.Errorf("kernelpath: conntrack events: %w", err)
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		ev.Close()
		return nil
	}
	p.events = ev
	p.wg.Go(func() {
		select {
		case err := <-errs:
			p.log.Warn().Err(err).Msg("conntrack event stream lost; kernel data flows are polled until it is back")
			p.mu.Lock()
			closed := p.closed
			p.mu.Unlock()
			if closed {
				return
			}
			ev.Close()
			time.Sleep(100 * time.Millisecond)
			if err := p.listen(); err != nil {
				p.log.Error().Err(err).Msg("conntrack event stream cannot be reopened; kernel data flows are polled")
			}
			p.pokeAll()
		case <-p.stop:
		}
	})
	p.mu.Unlock()
	return nil
}

// Forwards reports whether the kernel forwards the family of addr (the
// path can carry a connection between two other hosts).
func (p *Path) Forwards(addr netip.Addr) bool {
	if addr.Is4() {
		return p.v4
	}
	return p.v6
}

// Close stops following conntrack and, unless keep, deletes the table. A
// proxy handing its listeners to an upgraded process keeps the table,
// which the new process took over.
func (p *Path) Close(keep bool) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	events := p.events
	p.mu.Unlock()
	// The event stream first, while dispatch still drains the channel: its
	// worker may be blocked handing over an event, and closing waits for
	// it.
	if events != nil {
		events.Close()
	}
	close(p.stop)
	p.ct.Close()
	var err error
	if keep {
		p.leaveTable()
	} else {
		err = p.removeTable()
	}
	p.wg.Wait()
	return err
}

// leaveTable takes this process out of the owners of a table that another
// process took over, and closes the nftables connection.
func (p *Path) leaveTable() {
	p.nftMu.Lock()
	defer p.nftMu.Unlock()
	if p.nft.SetDeleteElements(p.sets.owner, pidElement(os.Getpid())) == nil {
		// An error here is an element already gone: nothing to do.
		p.nft.Flush()
	}
	p.nft.CloseLasting()
}

func (p *Path) removeTable() error {
	p.nftMu.Lock()
	defer p.nftMu.Unlock()
	p.nft.DelTable(p.table)
	err := p.nft.Flush()
	p.nft.CloseLasting()
	if err != nil {
		return fmt.Errorf("kernelpath: delete nftables table %s: %w", p.table.Name, err)
	}
	return nil
}

// Redirect is one transfer's redirect.
type Redirect struct {
	Client netip.Addr     // the only source address redirected
	Port   uint16         // the port the proxy announced
	To     netip.AddrPort // the upstream's passive address
	From   netip.Addr     // the proxy's address towards the upstream
	// Timeout bounds the elements' life if the proxy never removes them.
	Timeout time.Duration
}

// errFamily is returned for a redirect whose addresses are not all of one
// family: the kernel's NAT does not translate between IPv4 and IPv6.
var errFamily = errors.New("kernelpath: addresses of different families")

// Redirect adds the elements for r and returns its flow. The client's
// next connection from r.Client to r.Port is the flow; the caller must
// Close it.
func (p *Path) Redirect(r Redirect) (*Flow, error) {
	client, to, from := r.Client.Unmap(), netip.AddrPortFrom(r.To.Addr().Unmap(), r.To.Port()), r.From.Unmap()
	if client.Is4() != to.Addr().Is4() || client.Is4() != from.Is4() {
		return nil, errFamily
	}
	fam := &p.sets.v4
	if client.Is6() {
		fam = &p.sets.v6
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, errors.New("kernelpath: closed")
	}
	var id uint32
	for range idMask {
		p.nextID = (p.nextID + 1) & idMask
		if _, busy := p.flows[markBase|p.nextID]; !busy && p.nextID != 0 {
			id = p.nextID
			break
		}
	}
	if id == 0 {
		p.mu.Unlock()
		return nil, errors.New("kernelpath: no free mark")
	}
	f := &Flow{
		p: p, fam: fam, mark: markBase | id, client: client, port: r.Port,
		established: make(chan struct{}), changed: make(chan struct{}, 1),
	}
	p.flows[f.mark] = f
	p.mu.Unlock()

	timeout := elementTimeout(r.Timeout)
	mark := markBytes(f.mark)
	p.nftMu.Lock()
	key := addrPortBytes(client.AsSlice(), r.Port)
	err := p.nft.SetAddElements(fam.dnat, []nftables.SetElement{{Key: mark, Val: addrPortBytes(to.Addr().AsSlice(), to.Port()), Timeout: timeout}})
	if err == nil {
		err = p.nft.SetAddElements(fam.snat, []nftables.SetElement{{Key: mark, Val: from.AsSlice(), Timeout: timeout}})
	}
	if err == nil {
		err = p.nft.SetAddElements(fam.keys, []nftables.SetElement{{Key: key, Val: mark, Timeout: timeout}})
	}
	if err == nil {
		// The gate last: it is what makes the packet path act (the batch
		// is one transaction anyway).
		err = p.nft.SetAddElements(fam.gate, []nftables.SetElement{{Key: key, Timeout: timeout}})
	}
	if err == nil {
		err = p.nft.Flush()
	}
	p.nftMu.Unlock()
	if err != nil {
		p.forget(f)
		// A partly applied batch is applied not at all: nftables batches
		// are transactions.
		return nil, fmt.Errorf("kernelpath: add redirect: %w", err)
	}
	return f, nil
}

func (p *Path) forget(f *Flow) {
	p.mu.Lock()
	if p.flows[f.mark] == f {
		delete(p.flows, f.mark)
	}
	p.mu.Unlock()
}

// removeElements deletes f's redirect in one transaction (with the gate
// unless the connection has used it). Deleting a missing element fails
// the whole transaction, so a gate the packet path closed meanwhile, or
// elements that timed out, make it try again element by element.
func (p *Path) removeElements(f *Flow, gate bool) error {
	mark := markBytes(f.mark)
	key := addrPortBytes(f.client.AsSlice(), f.port)
	type element struct {
		set *nftables.Set
		key []byte
	}
	var els []element
	if gate {
		els = append(els, element{f.fam.gate, key})
	}
	els = append(els, element{f.fam.keys, key}, element{f.fam.dnat, mark}, element{f.fam.snat, mark})
	p.nftMu.Lock()
	defer p.nftMu.Unlock()
	del := func(els []element) error {
		for _, e := range els {
			if err := p.nft.SetDeleteElements(e.set, []nftables.SetElement{{Key: e.key}}); err != nil {
				return err
			}
		}
		return p.nft.Flush()
	}
	err := del(els)
	if err == nil || !errors.Is(err, unix.ENOENT) || len(els) == 1 {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return err
	}
	var errs []error
	for _, e := range els {
		if err := del([]element{e}); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete %s element: %w", e.set.Name, err))
		}
	}
	return errors.Join(errs...)
}

// deadTimeout is how long a killed flow's mark stays in the dead set: long
// enough for a peer that is sending (a server with a file to send, a
// client closing after the 426) to send again and be reset, short enough
// that nothing is left for long. Marks are handed out in turn over a
// million ids, so one is not reused meanwhile.
const deadTimeout = 3 * time.Second

// kill puts f's mark in the dead set for deadTimeout.
func (p *Path) kill(f *Flow) error {
	p.nftMu.Lock()
	defer p.nftMu.Unlock()
	if err := p.nft.SetAddElements(p.sets.dead, []nftables.SetElement{{Key: markBytes(f.mark), Timeout: deadTimeout}}); err != nil {
		return err
	}
	return p.nft.Flush()
}

// Elements counts the elements of the table's maps and dead set: what a
// test checks is back to zero.
func (p *Path) Elements() (redirects, dead int, err error) {
	p.nftMu.Lock()
	defer p.nftMu.Unlock()
	for _, s := range p.sets.all() {
		if s == p.sets.dead {
			continue
		}
		els, err := p.nft.GetSetElements(s)
		if err != nil {
			return 0, 0, err
		}
		redirects += len(els)
	}
	els, err := p.nft.GetSetElements(p.sets.dead)
	return redirects, len(els), err
}

// dispatch hands conntrack events to the flows they belong to.
func (p *Path) dispatch() {
	for {
		var ev conntrack.Event
		select {
		case ev = <-p.evs:
		case <-p.stop:
			return
		}
		if ev.Flow == nil || ev.Flow.Mark&markMask != markBase {
			continue
		}
		p.mu.Lock()
		f := p.flows[ev.Flow.Mark]
		p.mu.Unlock()
		if f != nil {
			f.event(ev)
		}
	}
}

// pokeAll makes every flow look again, after events may have been lost.
func (p *Path) pokeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, f := range p.flows {
		f.poke()
	}
}

// resyncEvery is how often the path looks in the conntrack table for the
// flows of redirects still waiting, whose event may have been lost.
const resyncEvery = time.Second

// resync makes good lost events: once a second, while a redirect waits
// for its connection, one walk of the conntrack table (filtered by the
// marks' prefix) for all of them.
func (p *Path) resync() {
	tick := time.NewTicker(resyncEvery)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-p.stop:
			return
		}
		p.mu.Lock()
		waiting := 0
		for _, f := range p.flows {
			if !f.isKnown() {
				waiting++
			}
		}
		p.mu.Unlock()
		if waiting == 0 {
			continue
		}
		flows, err := p.ct.DumpFilter(conntrack.NewFilter().Mark(markBase).MarkMask(markMask), nil)
		if err != nil {
			continue
		}
		for _, c := range flows {
			p.mu.Lock()
			f := p.flows[c.Mark]
			p.mu.Unlock()
			if f != nil {
				f.event(conntrack.Event{Type: conntrack.EventUpdate, Flow: &c})
			}
		}
	}
}

func readSysctl(key string) (string, error) {
	b, err := os.ReadFile("/proc/sys/" + key)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

func sysctlIs(key, want string) bool {
	v, err := readSysctl(key)
	return err == nil && v == want
}
