package proxy

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Every reason a session can end with (the reason of its summary line) is
// counted under a result of its own, not under "error": the reasons are
// read from the package's source, so a new one fails this test until it is
// given a result in sessionResults.
func TestSessionResultsCoverEveryReason(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	reasons := make(map[string]string) // reason: where
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			var lit ast.Expr
			switch n := n.(type) {
			case *ast.CallExpr:
				if sel, ok := n.Fun.(*ast.SelectorExpr); ok && (sel.Sel.Name == "end" || sel.Sel.Name == "abortSession") && len(n.Args) > 0 {
					lit = n.Args[0]
				}
			case *ast.AssignStmt:
				if sel, ok := n.Lhs[0].(*ast.SelectorExpr); ok && sel.Sel.Name == "endReason" && len(n.Rhs) == 1 {
					lit = n.Rhs[0]
				}
			}
			if bl, ok := lit.(*ast.BasicLit); ok && bl.Kind == token.STRING {
				s, _ := strconv.Unquote(bl.Value)
				reasons[s] = fset.Position(bl.Pos()).String()
			}
			return true
		})
	}
	if len(reasons) < 10 {
		t.Fatalf("found only %d end reasons in the source: %v", len(reasons), reasons)
	}
	for reason, where := range reasons {
		if _, ok := sessionResults[reason]; !ok {
			t.Errorf("%s: end reason %q has no result in sessionResults", where, reason)
		}
	}
}

func TestDataFailureOf(t *testing.T) {
	dialErr := fmt.Errorf("proxy: dial data 127.0.0.1:1: %w", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")})
	tests := []struct {
		err  error
		want string
	}{
		{nil, ""},
		{errAborted, ""},
		{errNoConnection, ""},
		{errStalled, ""}, // the relay had started: a failed transfer
		{&net.OpError{Op: "readfrom", Err: errors.New("connection reset by peer")}, ""},
		{errAcceptTimeout, dataAcceptTimeout},
		{dialErr, dataDialFailed},
		{fmt.Errorf("%w: %w", errDataTLS, errors.New("bad certificate")), dataTLSHandshake},
		{errDataNotResumed, dataNotResumed},
	}
	for _, tt := range tests {
		if got := dataFailureOf(tt.err); got != tt.want {
			t.Errorf("dataFailureOf(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

// A nil *Metrics counts nothing and never panics: it is what every call
// site sees when Config.Metrics is not set.
func TestNilMetrics(t *testing.T) {
	var m *Metrics
	m.attach(nil)
	m.sessionEnded("quit")
	m.refused(errDenied)
	m.login(true)
	m.upstreamConnected(0)
	m.upstreamFailed(errors.New("x"))
	m.upstreamRefusedTLS()
	m.upstreamTLS(nil)
	m.tlsHandshake(sideClient, nil)
	m.dataTLS(sideClientData, nil, errors.New("x"), false)
	m.dataFailure(dataForeignPeer)
	m.dataListenFailed(errNoPassivePort, true)
}
