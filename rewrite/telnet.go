package rewrite

import "bytes"

// Telnet command bytes (RFC 854, "TELNET COMMAND STRUCTURE"). RFC 959
// section 4.1.3 has clients send ABOR as IAC IP, IAC DM (the latter as
// TCP urgent data, "Synch") followed by the command, and section 4 makes
// the control connection follow the Telnet protocol.
const (
	iac  = 0xFF // interpret as command
	dont = 0xFE
	do   = 0xFD
	wont = 0xFC
	will = 0xFB
	sb   = 0xFA // subnegotiation begin (RFC 855)
	se   = 0xF0 // subnegotiation end
)

// StripTelnet removes the Telnet command sequences that clients put on the
// control connection, so the proxy forwards plain command text:
//
//   - IAC IAC becomes a single 0xFF data byte;
//   - IAC WILL/WONT/DO/DONT option is removed (3 bytes);
//   - IAC SB ... IAC SE is removed (RFC 855), including an unterminated
//     subnegotiation running to the end of the line;
//   - IAC followed by any other byte (IP 0xF4, DM 0xF2, AO, AYT, NOP, ...)
//     is removed (2 bytes);
//   - a lone IAC at the end of the line is removed.
//
// The proxy does not negotiate options: RFC 1123 section 4.1.2.12 lets an
// FTP server ignore them, and passing them on would only confuse servers
// that do not.
//
// StripTelnet works in place and returns line shortened; a line without
// 0xFF is returned as is.
func StripTelnet(line []byte) []byte {
	i := bytes.IndexByte(line, iac)
	if i < 0 {
		return line
	}
	w := i // write position; everything before i is kept as is
	for i < len(line) {
		b := line[i]
		if b != iac {
			line[w] = b
			w++
			i++
			continue
		}
		if i+1 == len(line) {
			break // lone trailing IAC
		}
		switch cmd := line[i+1]; {
		case cmd == iac:
			line[w] = iac
			w++
			i += 2
		case cmd >= will && cmd <= dont:
			i = min(i+3, len(line))
		case cmd == sb:
			i = skipSubnegotiation(line, i+2)
		default:
			i += 2
		}
	}
	return line[:w]
}

// skipSubnegotiation returns the index just past the IAC SE that ends the
// subnegotiation whose parameters start at i, or len(line). Inside it, IAC
// IAC is an escaped data byte and must not be taken for the start of
// IAC SE (RFC 855).
func skipSubnegotiation(line []byte, i int) int {
	for i < len(line) {
		if line[i] != iac {
			i++
			continue
		}
		if i+1 < len(line) && line[i+1] == se {
			return i + 2
		}
		i += 2
	}
	return len(line)
}
