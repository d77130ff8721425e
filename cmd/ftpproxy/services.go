package main

// Several services in one process. A configuration file may hold a
// services mapping, each service a proxy of its own (a proxy.Server) with
// its listeners and its server or pool of servers:
//
//	log-level: info                # the process's own settings: top level only
//	health: 127.0.0.1:8021
//	idle-timeout: 10m              # any other setting here is every service's default
//	services:
//	  files:                       # the name: logs, metrics, health, reloads
//	    listen: ":21"
//	    upstream: 10.0.0.5:21
//	    passive-ports: 21000-21099
//	  archive:
//	    listen: ":2121"
//	    upstream: [10.0.1.5:21, 10.0.1.6:21]   # a pool
//	    passive-ports: 21100-21199
//	    max-sessions: 20           # this service's own value wins
//
// The services are a mapping, not a list, because a service is known by its
// name everywhere (a reload matches services by it, metrics and logs carry
// it) and a mapping makes the name required and unique by its shape, as
// docker-compose's services are.
//
// A service takes every key of the top level but the process's own
// (processKeys). listen, listen-implicit, upstream, passive-ports and
// active-ports belong to each service (serviceKeys) and are refused at the
// top level of a file with services, as on the command line: there is no
// sensible default for them shared by several services. A flag on the
// command line wins over the file for every service, as it does without
// services.

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/ftpproxy/ftpproxy/nat"
)

// servicesKey is the top-level key of the services.
const servicesKey = "services"

// processKeys are the settings of the process as a whole: one log, one
// health endpoint, one PID file, one drain at the end, one data path.
var processKeys = map[string]bool{
	configFlag: true, "log-format": true, "log-level": true, "health": true, "pid-file": true, "drain-timeout": true,
	"data-path": true, "kernel-table": true, "kernel-forward-guard": true,
}

// serviceKeys are the settings each service must have of its own when
// there are services.
var serviceKeys = []string{"listen", "listen-implicit", "upstream", "passive-ports", "active-ports"}

// serviceName is what a service may be called: it is a label value of the
// metrics and a field of the logs.
var serviceName = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

// scope is what one run of parseScope reads: the top level (svc nil), or
// one service of the file. apply records the file it read.
type scope struct {
	svc  *serviceDef
	file *configFile
}

// serviceDef is one service of the file.
type serviceDef struct {
	name string
	line int
	node *yaml.Node  // its mapping
	top  *configFile // the file, as the top level read it
}

// apply sets the flags of fs from the file at path (the top level) or from
// the service (and the top level's shared settings).
func (sc *scope) apply(fs *flag.FlagSet, path string) (*configFile, error) {
	var err error
	if sc.svc != nil {
		sc.file, err = sc.svc.apply(fs)
	} else {
		sc.file, err = applyConfig(fs, path)
	}
	return sc.file, err
}

// hasServices reports whether sc is the top level of a file with services.
func (sc *scope) hasServices() bool {
	return sc.svc == nil && sc.file != nil && sc.file.services != nil
}

// findServices records the services key of the top level, if there is one.
func (c *configFile) findServices(root *yaml.Node) bool {
	for i := 0; i+1 < len(root.Content); i += 2 {
		if k := root.Content[i]; k.Kind == yaml.ScalarNode && k.Value == servicesKey {
			c.root, c.services, c.servicesLine = root, yamlDeref(root.Content[i+1]), k.Line
			return true
		}
	}
	return false
}

// applyTop reads the top level of a file with services: it sets the
// process's own settings, checks the type of the others (each service
// sets them) and refuses the keys that belong to each service.
func (c *configFile) applyTop(fs *flag.FlagSet, root *yaml.Node) error {
	cmdline := onCommandLine(fs)
	for _, name := range serviceKeys {
		if cmdline[name] {
			return fmt.Errorf("--%s: %s has services, and each names its own", name, c.path)
		}
	}
	seen := map[string]int{}
	return c.setKeys(fs, root, seen, func(k *yaml.Node) (keyUse, error) {
		switch {
		case k.Kind != yaml.ScalarNode:
			return keySet, nil // lookup refuses it
		case k.Value == servicesKey:
			if first, ok := seen[servicesKey]; ok {
				return 0, c.errorf(k.Line, nil, "duplicate key %q (first at line %d)", servicesKey, first)
			}
			seen[servicesKey] = k.Line
			return keySkip, nil
		case slices.Contains(serviceKeys, k.Value):
			return 0, c.errorf(k.Line, nil, "%s: with services, set it in each service", k.Value)
		case processKeys[k.Value]:
			return keySet, nil
		}
		return keyCheck, nil // each service sets it
	})
}

// apply sets the flags of fs from the service's keys, then from the top
// level's shared settings that the service does not set itself. Flags on
// the command line win over both.
func (d *serviceDef) apply(fs *flag.FlagSet) (*configFile, error) {
	c := &configFile{path: d.top.path, lines: map[string]int{}, service: d.name, serviceLine: d.line}
	cmdline := onCommandLine(fs)
	seen := map[string]int{}
	err := c.setKeys(fs, d.node, seen, func(k *yaml.Node) (keyUse, error) {
		if k.Kind == yaml.ScalarNode && (processKeys[k.Value] && k.Value != configFlag || k.Value == servicesKey) {
			return 0, c.errorf(k.Line, nil, "%s: a setting of the whole process, at the top level only", k.Value)
		}
		return keySet, nil
	})
	if err != nil {
		return nil, err
	}
	root := d.top.root
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], yamlDeref(root.Content[i+1])
		if _, own := seen[k.Value]; own || k.Value == servicesKey || processKeys[k.Value] {
			continue
		}
		f := fs.Lookup(k.Value)
		if f == nil || cmdline[f.Name] {
			continue // the top level refused it already
		}
		vals, err := configValues(c, f.Name, keyKindOf(f), v)
		if err != nil {
			return nil, err
		}
		if err := c.set(fs, f, k.Line, vals); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// parseServices parses each service of the file top into options of its
// own, in the file's order, and checks them against each other.
func (o *options) parseServices(args []string, top *configFile) error {
	node := top.services
	if node.Kind != yaml.MappingNode || len(node.Content) == 0 {
		return top.errorf(top.servicesLine, nil, "%s: want a mapping of service names to their settings, such as \"files: {listen: \\\":21\\\", upstream: 10.0.0.5:21}\"", servicesKey)
	}
	seen := map[string]int{}
	var files []*configFile
	for i := 0; i+1 < len(node.Content); i += 2 {
		k, v := node.Content[i], yamlDeref(node.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			return top.errorf(k.Line, nil, "a service name must be a string")
		}
		name := k.Value
		if first, ok := seen[name]; ok {
			return top.errorf(k.Line, nil, "duplicate service %q (first at line %d)", name, first)
		}
		seen[name] = k.Line
		if !serviceName.MatchString(name) {
			return top.errorf(k.Line, nil, "service name %q: want lower-case letters, digits, '.', '_' and '-', at most 63", name)
		}
		if v.Kind != yaml.MappingNode {
			return top.errorf(v.Line, nil, "service %q: want a mapping of settings, such as \"upstream: 10.0.0.5:21\"", name)
		}
		sc := &scope{svc: &serviceDef{name: name, line: k.Line, node: v, top: top}}
		so, err := parseScope(args, io.Discard, sc)
		if err != nil {
			return err
		}
		so.name = name
		o.services = append(o.services, so)
		files = append(files, sc.file)
	}
	return checkServices(o.services, files)
}

// checkServices refuses what services may not share: a listen address (one
// of them would not start) and passive or active ports (the kernel would
// give a port to whichever service asked first, and a data connection
// could reach the other's listener).
func checkServices(svcs []*options, files []*configFile) error {
	type claim struct {
		svc, key, addr string
	}
	var claims []claim
	for i, s := range svcs {
		mine := make([]claim, 0, len(s.listen)+len(s.listenImplicit))
		for _, a := range s.listen {
			mine = append(mine, claim{s.name, "listen", a})
		}
		for _, a := range s.listenImplicit {
			mine = append(mine, claim{s.name, "listen-implicit", a})
		}
		for _, m := range mine {
			for _, c := range claims {
				if sameListenAddr(m.addr, c.addr) {
					return files[i].errorf(files[i].lineOf(m.key, m.addr), nil, "%s %s: service %q listens there too (%s %s)",
						m.key, m.addr, c.svc, c.key, c.addr)
				}
			}
		}
		claims = append(claims, mine...)
	}
	type portRange struct {
		svc, key string
		lo, hi   int
	}
	var ranges []portRange
	for i, s := range svcs {
		var mine []portRange
		for _, r := range []struct {
			key  string
			pool *nat.PortPool
		}{{"passive-ports", s.passivePorts}, {"active-ports", s.activePorts}} {
			if r.pool != nil {
				lo, hi := r.pool.Range()
				mine = append(mine, portRange{s.name, r.key, int(lo), int(hi)})
			}
		}
		for _, m := range mine {
			for _, r := range ranges {
				if m.lo <= r.hi && r.lo <= m.hi {
					return files[i].errorf(files[i].lineOf(m.key, ""), nil, "%s %d-%d: overlaps the %s %d-%d of service %q",
						m.key, m.lo, m.hi, r.key, r.lo, r.hi, r.svc)
				}
			}
		}
		ranges = append(ranges, mine...)
	}
	return nil
}

// sameListenAddr reports whether two listen addresses would take the same
// socket: the same port, and the same host or a wildcard on either side.
// Port 0 (any free port) never clashes.
func sameListenAddr(a, b string) bool {
	ah, ap, err1 := net.SplitHostPort(a)
	bh, bp, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || ap != bp || ap == "0" {
		return false
	}
	wild := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return ah == bh || wild(ah) || wild(bh)
}

// lineOf is the line of the item text of key (any item if text is ""), or
// of key, or of the service.
func (c *configFile) lineOf(key, text string) int {
	for _, it := range c.items {
		if it.key == key && (text == "" || it.text == text) {
			return it.line
		}
	}
	if l, ok := c.lines[key]; ok {
		return l
	}
	return c.serviceLine
}

// parseUpstreams takes the values of --upstream: one server, or several
// (repeated, or separated by commas) for a pool.
func (o *options) parseUpstreams(values []string) error {
	var addrs []string
	for _, v := range values {
		for a := range strings.SplitSeq(v, ",") {
			a = strings.TrimSpace(a)
			if _, _, err := net.SplitHostPort(a); err != nil || a == "" {
				return fmt.Errorf("--upstream %q: want HOST:PORT, e.g. 10.0.0.5:21", a)
			}
			if slices.Contains(addrs, a) {
				return fmt.Errorf("--upstream %q: named twice", a)
			}
			addrs = append(addrs, a)
		}
	}
	o.upstream, o.pool = "", nil
	switch len(addrs) {
	case 0:
	case 1:
		o.upstream = addrs[0]
	default:
		o.upstream, o.pool = addrs[0], addrs
	}
	return nil
}

// errMixedServices refuses a reload that adds or removes the services of
// the file: the metrics of one service and of named services differ in
// their labels, and cannot be registered side by side.
var errMixedServices = errors.New("a reload cannot switch between services and a configuration without them: restart")
