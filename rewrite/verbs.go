package rewrite

// knownVerbs maps the verbs of RFC 959 and its common extensions to
// themselves, so ParseCommand can return a constant instead of allocating
// a string for every command. Looking a map up by string(b) does not
// allocate.
var knownVerbs = func() map[string]string {
	m := make(map[string]string)
	for _, v := range []string{
		// RFC 959 section 4.1
		"USER", "PASS", "ACCT", "CWD", "CDUP", "SMNT", "REIN", "QUIT",
		"PORT", "PASV", "TYPE", "STRU", "MODE", "RETR", "STOR", "STOU",
		"APPE", "ALLO", "REST", "RNFR", "RNTO", "ABOR", "DELE", "RMD",
		"MKD", "PWD", "LIST", "NLST", "SITE", "SYST", "STAT", "HELP",
		"NOOP",
		// RFC 775 X-commands, still sent by some clients.
		"XCWD", "XCUP", "XMKD", "XRMD", "XPWD",
		// RFC 2228 security, RFC 2389 FEAT/OPTS, RFC 2428, RFC 2640,
		// RFC 3659, RFC 7151.
		"AUTH", "ADAT", "PROT", "PBSZ", "CCC", "MIC", "CONF", "ENC",
		"FEAT", "OPTS", "EPRT", "EPSV", "LANG", "MDTM", "SIZE", "MLST",
		"MLSD", "HOST",
		// Widespread but unstandardised.
		"CLNT", "MFMT", "MFCT", "MFF", "AVBL", "CSID", "HASH",
	} {
		m[v] = v
	}
	return m
}()

// internVerb returns the upper-case verb in b as a string, without
// allocating when it is a known verb.
func internVerb(b []byte) string {
	if v, ok := knownVerbs[string(b)]; ok {
		return v
	}
	return string(b)
}
