package proxy

// UpstreamPool is a set of equivalent FTP servers a Server spreads its
// sessions over. A session tries the servers in the order Candidates gives,
// moving on when one cannot be reached, does not greet in time or greets
// with anything but 2xx, and reports each try with Report.
type UpstreamPool struct {
	addrs []string
}

// NewUpstreamPool returns a pool of the servers at addrs, "host:port" each.
func NewUpstreamPool(addrs []string) *UpstreamPool {
	return &UpstreamPool{addrs: append([]string(nil), addrs...)}
}

// Candidates returns the servers a new session tries, in order.
func (p *UpstreamPool) Candidates() []string { return append([]string(nil), p.addrs...) }

// Report records one try of addr: err is nil when it connected and greeted
// with 2xx.
func (p *UpstreamPool) Report(addr string, err error) {}
