// Package faults holds the fault-injection, drain and soak suites of
// ftpproxy: real FTP servers (vsftpd, proftpd) behind the ftpproxy binary,
// with upstream sessions and servers killed mid-transfer, clients killed
// mid-transfer, silent upstreams, data connections that never come,
// thousands of short sessions, password guessing, SIGTERM drains and a soak
// of hundreds of concurrent clients with random faults.
//
// Every transfer is recorded with the client's final reply and the sha256
// of what arrived; a success reply (226) for bytes that did not all arrive
// counts as lost. After every case the proxy must serve a fresh session
// and its goroutines, open files and passive ports in use must come back
// to where they were before.
//
// The tests carry the build tag "interop"; run.sh (fault and drain cases)
// and soak.sh (the soak) build the binaries and run them in a network
// namespace of their own. See README.md.
package faults
