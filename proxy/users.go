package proxy

import (
	"bufio"
	"fmt"
	"io"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// ProxyUsers are the accounts of forward mode's proxy authentication: a
// name and a bcrypt hash of the password each.
type ProxyUsers struct {
	hashes map[string][]byte
	// dummy is compared against when the name is unknown, so that a
	// wrong name and a wrong password take the same time.
	dummy []byte
}

// maxProxyUserCost is the highest bcrypt cost a proxy users file may use.
// Each login checks one hash (or, for an unknown name, a dummy of the
// file's highest cost) under the session's lock: at cost 16 that is about
// five seconds of CPU, and each step doubles it (bcrypt allows 31, about a
// day).
const maxProxyUserCost = 16

// costTime is roughly how long one check at cost takes on a current CPU
// (cost 10 about 60 ms).
func costTime(cost int) time.Duration {
	return 60 * time.Millisecond << (cost - 10)
}

// ParseProxyUsers reads "name:hash" lines (htpasswd's bcrypt format, as
// `ftpproxy passwd` and `htpasswd -B` write it); blank lines and lines
// starting with # are skipped.
func ParseProxyUsers(r io.Reader) (*ProxyUsers, error) {
	u := &ProxyUsers{hashes: make(map[string][]byte)}
	sc := bufio.NewScanner(r)
	maxCost := bcrypt.MinCost
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, hash, ok := strings.Cut(line, ":")
		if !ok || name == "" || strings.ContainsAny(name, "@ \t") {
			return nil, fmt.Errorf("proxy users: line %d: want name:bcrypt-hash, a name without @ or spaces", n)
		}
		cost, err := bcrypt.Cost([]byte(hash))
		if err != nil {
			return nil, fmt.Errorf("proxy users: line %d (%s): not a bcrypt hash: %w", n, name, err)
		}
		if cost > maxProxyUserCost {
			return nil, fmt.Errorf("proxy users: line %d (%s): bcrypt cost %d, at most %d: each login would take %s or more (ftpproxy passwd uses %d)",
				n, name, cost, maxProxyUserCost, costTime(cost), bcrypt.DefaultCost)
		}
		if _, dup := u.hashes[name]; dup {
			return nil, fmt.Errorf("proxy users: line %d: %s listed twice", n, name)
		}
		u.hashes[name] = []byte(hash)
		maxCost = max(maxCost, cost)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("proxy users: %w", err)
	}
	if len(u.hashes) == 0 {
		return nil, fmt.Errorf("proxy users: no user listed")
	}
	var err error
	if u.dummy, err = bcrypt.GenerateFromPassword([]byte("ftpproxy: no such proxy user"), maxCost); err != nil {
		return nil, fmt.Errorf("proxy users: %w", err)
	}
	return u, nil
}

// Verify reports whether pass is name's password.
func (u *ProxyUsers) Verify(name, pass string) bool {
	h, ok := u.hashes[name]
	if !ok {
		h = u.dummy
	}
	err := bcrypt.CompareHashAndPassword(h, []byte(pass))
	return ok && err == nil
}

// Len returns the number of users.
func (u *ProxyUsers) Len() int { return len(u.hashes) }
