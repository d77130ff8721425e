package probe

import (
	"syscall"
	"time"
)

// The errors a dial reports for the outcomes the probe tells apart.
var (
	errConnRefused error = syscall.ECONNREFUSED
	errHostUnreach error = syscall.EHOSTUNREACH
	errNetUnreach  error = syscall.ENETUNREACH
)

// aLongTimeAgo is a deadline in the past, to unblock a read or write.
var aLongTimeAgo = time.Unix(1, 0)
