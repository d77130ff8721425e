module github.com/ftpproxy/ftpproxy

go 1.26.0

require (
	github.com/hashicorp/go-sockaddr v1.0.7
	github.com/pires/go-proxyproto v0.15.0
	github.com/rs/zerolog v1.35.1
	go.uber.org/goleak v1.3.0
	go.yaml.in/yaml/v3 v3.0.6
	golang.org/x/sys v0.50.0
)

require (
	github.com/hashicorp/errwrap v1.1.0 // indirect
	github.com/mattn/go-colorable v0.1.14 // indirect
	github.com/mattn/go-isatty v0.0.20 // indirect
)
