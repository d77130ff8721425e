package proxy

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts what the proxy does, for Prometheus. Make one with
// NewMetrics and set it in Config.Metrics; a nil *Metrics counts nothing,
// and every method on it is safe to call.
//
// Each metric follows a log line: the log records the single case (which
// client, which user, which file), the metric counts the cases. So labels
// take values only from small fixed sets, never an address, a user or a
// path. Counters move when an event ends (a session, a transfer, a
// handshake), never per byte: the data relay is not touched, and a
// transfer's bytes are added when it ends.
type Metrics struct {
	sessions     map[string]prometheus.Counter // by result
	refusals     map[string]prometheus.Counter // by reason
	fwdRefusals  map[string]prometheus.Counter // forward mode, by reason
	logins       [2]prometheus.Counter         // failure, success
	transfers    [3][2][3]prometheus.Counter   // direction, mode, result
	bytes        [3]prometheus.Counter         // direction
	xferDuration [3]prometheus.Observer        // direction
	upConnect    prometheus.Observer
	upErrors     map[string]prometheus.Counter // by reason
	dataFailures map[string]prometheus.Counter // by reason
	dataPaths    map[string]prometheus.Counter // by path
	handshakes   map[string][2]prometheus.Counter
	dataResumed  map[string]prometheus.Counter // by side
	state        *scrapeCollector              // read at each scrape
}

// Label values. Each label has one of the values listed here.
const (
	// Session results: how a session ended (its summary line's reason,
	// mapped by sessionResults).
	resultQuit                = "quit"
	resultClientClosed        = "client_closed"
	resultUpstreamUnreachable = "upstream_unreachable"
	resultUpstreamRefused     = "upstream_refused"
	resultUpstreamGone        = "upstream_gone"
	resultTimeout             = "timeout"
	resultRefused             = "refused"
	resultBanned              = "banned"
	resultShutdown            = "shutdown"
	resultTLSFailed           = "tls_failed"
	resultProtocolError       = "protocol_error"
	resultError               = "error"

	// Transfer results.
	xferOK      = "ok"
	xferFailed  = "failed"
	xferAborted = "aborted"

	// Why a session was refused before the upstream was dialled.
	refusedAccessList  = "access_list"
	refusedMaxSessions = "max_sessions"
	refusedMaxPerIP    = "max_sessions_per_ip"
	refusedBanned      = "banned"

	// Why the upstream control connection could not be opened.
	upRefused = "refused"
	upTimeout = "timeout"
	upTLS     = "tls"
	upOther   = "other"

	// Why a data connection could not be opened.
	dataAcceptTimeout  = "accept_timeout"
	dataForeignPeer    = "foreign_peer_refused"
	dataBadProxyHeader = "bad_proxy_header"
	dataNoPassivePort  = "no_passive_port"
	dataNoActivePort   = "no_active_port"
	dataListenFailed   = "listen_failed"
	dataDialFailed     = "dial_failed"
	dataTLSHandshake   = "tls_handshake"
	dataNotResumed     = "not_resumed"

	// TLS sides: the control connections and the data connections, each
	// towards the client (the proxy is the TLS server) and towards the
	// upstream (the proxy is the TLS client).
	sideClient       = "client"
	sideUpstream     = "upstream"
	sideClientData   = "client_data"
	sideUpstreamData = "upstream_data"
)

// sessionResults maps the reason in a session's summary line to the
// result it is counted under. A reason missing here counts as "error".
var sessionResults = map[string]string{
	"quit":                        resultQuit,
	"client closed":               resultClientClosed,
	"client write failed":         resultClientClosed,
	"upstream unreachable":        resultUpstreamUnreachable,
	"upstream refused":            resultUpstreamRefused,
	"upstream closed":             resultUpstreamGone,
	"upstream gone":               resultUpstreamGone,
	"upstream write failed":       resultUpstreamGone,
	"greeting timeout":            resultTimeout,
	"login timeout":               resultTimeout,
	"idle timeout":                resultTimeout,
	"refused":                     resultRefused,
	"banned":                      resultBanned,
	"proxy shutting down":         resultShutdown,
	"client TLS handshake failed": resultTLSFailed,
	"upstream TLS failed":         resultTLSFailed,
	"upstream refused TLS":        resultTLSFailed,
	"upstream refused PROT P":     resultTLSFailed,
	"command backlog":             resultProtocolError,
	"overlong commands":           resultProtocolError,
	"malformed upstream reply":    resultProtocolError,
	"bad PROXY header":            resultProtocolError,
	"untrusted PROXY header":      resultProtocolError,
}

var (
	sessionResultValues = []string{resultQuit, resultClientClosed, resultUpstreamUnreachable, resultUpstreamRefused,
		resultUpstreamGone, resultTimeout, resultRefused, resultBanned, resultShutdown, resultTLSFailed,
		resultProtocolError, resultError}
	refusalValues     = []string{refusedAccessList, refusedMaxSessions, refusedMaxPerIP, refusedBanned}
	upErrorValues     = []string{upRefused, upTimeout, upTLS, upOther}
	dataFailureValues = []string{dataAcceptTimeout, dataForeignPeer, dataBadProxyHeader, dataNoPassivePort,
		dataNoActivePort, dataListenFailed, dataDialFailed, dataTLSHandshake, dataNotResumed}
	sideValues       = []string{sideClient, sideUpstream, sideClientData, sideUpstreamData}
	xferResultValues = [3]string{xferOK, xferFailed, xferAborted}
	directionValues  = [3]string{dirDown: "down", dirUp: "up"}
	modeValues       = [2]string{"passive", "active"}
)

// Histogram buckets, in seconds. A TCP connect within a data centre takes
// well under a millisecond, one across the world a few hundred; the dial
// gives up at DialTimeout (10s by default). Transfers run from a listing
// of a few milliseconds to a download of an hour.
var (
	connectBuckets  = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	transferBuckets = []float64{.01, .05, .1, .5, 1, 5, 10, 30, 60, 300, 900, 3600}
)

const namespace = "ftpproxy"

// NewMetrics makes the proxy's metrics and registers them with reg; it
// panics if one of their names is registered there already, as
// prometheus.MustRegister does. With a nil reg they are counted but not
// registered. Every series of a labelled metric exists from the start, at
// zero, so that a rate over the first event is not lost.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	var cs []prometheus.Collector
	counterVec := func(name, help string, labels ...string) *prometheus.CounterVec {
		v := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help}, labels)
		cs = append(cs, v)
		return v
	}
	byValue := func(v *prometheus.CounterVec, values []string) map[string]prometheus.Counter {
		m := make(map[string]prometheus.Counter, len(values))
		for _, val := range values {
			m[val] = v.WithLabelValues(val)
		}
		return m
	}
	m := &Metrics{}

	sessions := counterVec("sessions_total",
		"Sessions ended, by result: quit, client_closed, upstream_unreachable, upstream_refused, upstream_gone, timeout, refused, banned, shutdown, tls_failed, protocol_error, error.",
		"result")
	m.sessions = byValue(sessions, sessionResultValues)

	refusals := counterVec("sessions_refused_total",
		"Sessions refused before the upstream was dialled, by reason: access_list (allow and deny lists), max_sessions, max_sessions_per_ip, banned.",
		"reason")
	m.refusals = byValue(refusals, refusalValues)

	fwdRefusals := counterVec("forward_refusals_total",
		"Forward-mode logins refused, by reason: destination (not allowed by --allow-dest, or a protected address), resolve (the name did not resolve), client (not in --forward-from), proxy_auth (wrong proxy user or password).",
		"reason")
	m.fwdRefusals = byValue(fwdRefusals, forwardRefusalValues)

	logins := counterVec("logins_total", "Logins, by result: success (230 or 232), failure (530 to PASS or ACCT).", "result")
	m.logins = [2]prometheus.Counter{logins.WithLabelValues("failure"), logins.WithLabelValues("success")}

	transfers := counterVec("transfers_total",
		"Transfers (RETR, STOR, LIST...) ended, by direction (down: to the client), the client's data mode and result (ok, failed, aborted: by ABOR or the session's end).",
		"direction", "mode", "result")
	bytes := counterVec("transfer_bytes_total", "Bytes relayed on data connections (on the kernel path, conntrack's count of the payload), by direction (down: to the client), added when a transfer ends.", "direction")
	xferDuration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "transfer_duration_seconds",
		Help:    "Time from a data channel's setup to the end of its transfer, by direction.",
		Buckets: transferBuckets,
	}, []string{"direction"})
	cs = append(cs, xferDuration)
	for _, d := range []direction{dirDown, dirUp} {
		dir := directionValues[d]
		m.bytes[d] = bytes.WithLabelValues(dir)
		m.xferDuration[d] = xferDuration.WithLabelValues(dir)
		for mode, modeName := range modeValues {
			for r, result := range xferResultValues {
				m.transfers[d][mode][r] = transfers.WithLabelValues(dir, modeName, result)
			}
		}
	}

	upConnect := prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: namespace, Name: "upstream_connect_duration_seconds",
		Help:    "Time to open the TCP connection to the upstream's control port.",
		Buckets: connectBuckets,
	})
	cs = append(cs, upConnect)
	m.upConnect = upConnect
	upErrors := counterVec("upstream_connect_errors_total",
		"Upstream control connections that could not be opened, by reason: refused, timeout, tls (handshake failed or AUTH TLS refused), other.",
		"reason")
	m.upErrors = byValue(upErrors, upErrorValues)

	dataPaths := counterVec("data_path_total",
		"Data channels set up with the kernel data path on, by the path that carries them: kernel, or the splice relay and why (splice_tls, splice_active, splice_family, splice_proxy_header, splice_add_failed, splice_not_redirected).",
		"path")
	m.dataPaths = byValue(dataPaths, dataPathValues)

	dataFailures := counterVec("data_connection_failures_total",
		"Data connections that could not be opened, or that were turned away, by reason: accept_timeout, foreign_peer_refused, bad_proxy_header, no_passive_port, no_active_port, listen_failed, dial_failed, tls_handshake, not_resumed.",
		"reason")
	m.dataFailures = byValue(dataFailures, dataFailureValues)

	handshakes := counterVec("tls_handshakes_total",
		"TLS handshakes, by side (client, upstream, client_data, upstream_data) and result (ok, failed).",
		"side", "result")
	m.handshakes = make(map[string][2]prometheus.Counter, len(sideValues))
	for _, side := range sideValues {
		m.handshakes[side] = [2]prometheus.Counter{handshakes.WithLabelValues(side, "failed"), handshakes.WithLabelValues(side, "ok")}
	}
	resumed := counterVec("tls_data_resumed_total",
		"TLS data connections that resumed their control connection's TLS session, by side (client_data, upstream_data).",
		"side")
	m.dataResumed = byValue(resumed, []string{sideClientData, sideUpstreamData})

	m.state = &scrapeCollector{}
	cs = append(cs, m.state)
	if reg != nil {
		reg.MustRegister(cs...)
	}
	return m
}

// attach has the metrics read srv's sessions, passive ports and bans at
// each scrape.
func (m *Metrics) attach(srv *Server) {
	if m == nil {
		return
	}
	m.state.add(srv)
}

// sessionEnded counts a session by the reason in its summary line.
func (m *Metrics) sessionEnded(reason string) {
	if m == nil {
		return
	}
	r, ok := sessionResults[reason]
	if !ok {
		r = resultError
	}
	m.sessions[r].Inc()
}

// refused counts a session refused by admission.
func (m *Metrics) refused(err error) {
	if m == nil {
		return
	}
	switch {
	case errors.Is(err, errDenied):
		m.refusals[refusedAccessList].Inc()
	case errors.Is(err, errTooManySessions):
		m.refusals[refusedMaxSessions].Inc()
	case errors.Is(err, errTooManyFromIP):
		m.refusals[refusedMaxPerIP].Inc()
	case errors.Is(err, errBanned):
		m.refusals[refusedBanned].Inc()
	}
}

// login counts a login that succeeded or failed.
func (m *Metrics) login(ok bool) {
	if m == nil {
		return
	}
	if ok {
		m.logins[1].Inc()
	} else {
		m.logins[0].Inc()
	}
}

// upstreamConnected records how long the upstream's TCP connect took.
func (m *Metrics) upstreamConnected(d time.Duration) {
	if m == nil {
		return
	}
	m.upConnect.Observe(d.Seconds())
}

// upstreamFailed counts an upstream control connection that could not be
// opened: the dial, or the PROXY header sent on it.
func (m *Metrics) upstreamFailed(err error) {
	if m == nil {
		return
	}
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		m.upErrors[upRefused].Inc()
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		m.upErrors[upTimeout].Inc()
	default:
		m.upErrors[upOther].Inc()
	}
}

// upstreamRefusedTLS counts an upstream that answered AUTH TLS with a
// refusal.
func (m *Metrics) upstreamRefusedTLS() {
	if m == nil {
		return
	}
	m.upErrors[upTLS].Inc()
}

// upstreamTLS counts the TLS handshake of the upstream control
// connection; a failed one is also an upstream connect error.
func (m *Metrics) upstreamTLS(err error) {
	if m == nil {
		return
	}
	m.tlsHandshake(sideUpstream, err)
	if err != nil {
		m.upErrors[upTLS].Inc()
	}
}

// tlsHandshake counts a handshake on side that ended with err.
func (m *Metrics) tlsHandshake(side string, err error) {
	if m == nil {
		return
	}
	ok := 0
	if err == nil {
		ok = 1
	}
	m.handshakes[side][ok].Inc()
}

// dataTLS counts the TLS handshake of a data connection on side (the
// client's or the upstream's end), unless the transfer was aborted under
// it; tc is the connection, err what its handshake returned.
func (m *Metrics) dataTLS(side string, tc *tls.Conn, err error, aborted bool) {
	if m == nil || aborted {
		return
	}
	m.tlsHandshake(side, err)
	if err == nil && tc.ConnectionState().DidResume {
		m.dataResumed[side].Inc()
	}
}

// dataPath counts a data channel by the path that carries it.
func (m *Metrics) dataPath(path string) {
	if m == nil {
		return
	}
	m.dataPaths[path].Inc()
}

// dataFailure counts a data connection turned away or not opened.
func (m *Metrics) dataFailure(reason string) {
	if m == nil {
		return
	}
	m.dataFailures[reason].Inc()
}

// dataListenFailed counts a data listener that could not be opened: on the
// client's side (passive) or the upstream's (active).
func (m *Metrics) dataListenFailed(err error, passive bool) {
	switch {
	case !errors.Is(err, errNoPassivePort):
		m.dataFailure(dataListenFailed)
	case passive:
		m.dataFailure(dataNoPassivePort)
	default:
		m.dataFailure(dataNoActivePort)
	}
}

// observeTransfer counts a data channel that has ended: its bytes, and,
// if a command used it, the transfer with its duration and result; and a
// data connection it could not open. The session's lock is held.
func (s *session) observeTransfer(t *transfer) {
	m := s.cfg.Metrics
	if m == nil {
		return
	}
	m.bytes[dirDown].Add(float64(t.down))
	m.bytes[dirUp].Add(float64(t.up))
	if reason := dataFailureOf(t.err); reason != "" {
		m.dataFailures[reason].Inc()
	}
	d := direction(t.dir.Load())
	if !t.claimed || (d != dirDown && d != dirUp) {
		return
	}
	mode := 0
	if !t.client.listening() {
		mode = 1
	}
	m.transfers[d][mode][s.transferResult(t)].Inc()
	m.xferDuration[d].Observe(t.duration.Seconds())
}

// transferResult is the index in xferResultValues of how t ended: ok,
// failed, or aborted (by the client's ABOR or the session's end). A relay
// the proxy stopped because the upstream reported a failure is failed.
func (s *session) transferResult(t *transfer) int {
	switch {
	case t.err == nil:
		return 0
	case errors.Is(t.err, errAborted):
		if x := s.cur; x != nil && x.xfer == t && x.done && (x.held.code >= 400 || x.noCompleter) {
			return 1
		}
		return 2
	}
	return 1
}

// dataFailureOf is the reason a transfer's error counts as a data
// connection failure, or "" if it does not: a relay that failed once both
// ends were open is a failed transfer, not a failed connection.
func dataFailureOf(err error) string {
	var op *net.OpError
	switch {
	case err == nil:
		return ""
	case errors.Is(err, errAcceptTimeout):
		return dataAcceptTimeout
	case errors.Is(err, errDataNotResumed):
		return dataNotResumed
	case errors.Is(err, errDataTLS):
		return dataTLSHandshake
	case errors.As(err, &op) && op.Op == "dial":
		return dataDialFailed
	}
	return ""
}

// active returns the number of addresses banned at now.
func (b *banList) active(now time.Time) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.max <= 0 {
		return 0
	}
	n := 0
	for _, until := range b.until {
		if now.Before(until) {
			n++
		}
	}
	return n
}

// scrapeCollector reads figures that are state, not events, at each
// scrape: the sessions running, the passive ports in use and free, and
// the addresses banned. A port pool shared by several servers is counted
// once.
type scrapeCollector struct {
	mu      sync.Mutex
	servers []*Server
}

var (
	descSessionsActive = prometheus.NewDesc(namespace+"_sessions_active",
		"Sessions running now.", nil, nil)
	descPortsInUse = prometheus.NewDesc(namespace+"_passive_ports_in_use",
		"Ports of the passive port range held by a data listener now; absent without a range.", nil, nil)
	descPortsFree = prometheus.NewDesc(namespace+"_passive_ports_free",
		"Ports of the passive port range free now; absent without a range.", nil, nil)
	descBansActive = prometheus.NewDesc(namespace+"_bans_active",
		"Client addresses banned now after failed logins.", nil, nil)
)

func (c *scrapeCollector) add(srv *Server) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.servers = append(c.servers, srv)
}

func (c *scrapeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descSessionsActive
	ch <- descPortsInUse
	ch <- descPortsFree
	ch <- descBansActive
	describePools(ch)
}

func (c *scrapeCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	servers := append([]*Server(nil), c.servers...)
	c.mu.Unlock()
	now := time.Now()
	var sessions, bans, inUse, size int
	pools := false
	seen := make(map[any]bool)
	for _, srv := range servers {
		sessions += srv.Sessions()
		if b := srv.adm.bans; !seen[b] {
			seen[b] = true
			bans += b.active(now)
		}
		if p := srv.config().PassivePorts; p != nil && !seen[p] {
			seen[p] = true
			pools = true
			inUse += p.InUse()
			size += p.Size()
		}
	}
	ch <- prometheus.MustNewConstMetric(descSessionsActive, prometheus.GaugeValue, float64(sessions))
	ch <- prometheus.MustNewConstMetric(descBansActive, prometheus.GaugeValue, float64(bans))
	if pools {
		ch <- prometheus.MustNewConstMetric(descPortsInUse, prometheus.GaugeValue, float64(inUse))
		ch <- prometheus.MustNewConstMetric(descPortsFree, prometheus.GaugeValue, float64(size-inUse))
	}
	collectPools(ch, servers)
}
