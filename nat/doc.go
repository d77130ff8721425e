// Package nat decides the addresses and ports ftpproxy puts in front of its
// clients: which IP address a PASV reply advertises, and which passive port a
// data listener gets. It holds no sockets, so every decision can be tested on
// its own; package proxy asks it and opens the listeners.
//
//	pool, _ := nat.NewPortPool(21000, 21099)
//	port, ok := pool.Acquire() // a free port picked at random from the range
//	defer pool.Release(port)
//
//	adv := nat.Advertiser{Static: netip.MustParseAddr("203.0.113.7")}
//	ip := adv.Advertise(clientIP, localIP) // 203.0.113.7
package nat
