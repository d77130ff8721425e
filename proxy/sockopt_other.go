//go:build !linux

package proxy

import (
	"net"

	"github.com/rs/zerolog"
)

func setOOBInline(net.Conn, zerolog.Logger) {}
