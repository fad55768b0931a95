//go:build natbench

// Package natlab is the NAT-traversal benchmark: it runs the real p2pnode
// binary in netlab's namespaces, behind routers of every NAT kind, and
// measures how often and how fast a forward reaches a served port directly.
// It is never part of `go test ./...` (build tag natbench); run it with
// bench/nat-matrix.sh, as root.
package natlab

import (
	"flag"
	"fmt"
	"os"
	"testing"

	"github.com/p2pnode/p2pnode/internal/e2etest"
)

// bin is the p2pnode binary under test, built once by TestMain.
var bin string

// TestMain checks the flags, builds ./cmd/p2pnode once (without -race: the
// benchmark measures the binary users run), runs the benchmark and removes
// the binary.
func TestMain(m *testing.M) {
	flag.Parse()
	var err error
	if combos, err = selectCombos(); err != nil {
		fmt.Fprintf(os.Stderr, "natlab: %v\n", err)
		os.Exit(2)
	}
	os.Exit(e2etest.Main(m, e2etest.Options{Name: "natlab"}, &bin))
}
