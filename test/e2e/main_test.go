// Package e2e drives the built p2pnode binary as a user would: real
// processes, each with its own --home, talking over loopback to a bootstrap
// node of their own. Nothing here reaches outside 127.0.0.1: every node-running
// command gets an explicit --bootstrap (or is the bootstrap node), loopback
// listen addresses and --nat-port-map=false, and no name is resolved.
package e2e

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// bin is the p2pnode binary under test, built once by TestMain.
var bin string

// TestMain builds ./cmd/p2pnode once into a temporary directory (with -race
// when the tests themselves run with -race, so the race detector watches the
// nodes too), runs the tests and removes the binary.
//
// P2PNODE_E2E_BINARY=/path/to/p2pnode runs the tests against that binary
// instead of building one.
func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	if p := os.Getenv("P2PNODE_E2E_BINARY"); p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			fmt.Fprintf(os.Stderr, "e2e: P2PNODE_E2E_BINARY=%s: %v\n", p, err)
			return 1
		}
		bin = abs
		return m.Run()
	}
	if testing.Short() {
		// Nothing to build: every test skips itself in -short mode.
		return m.Run()
	}

	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err == nil {
		_, err = os.Stat(filepath.Join(root, "go.mod"))
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: cannot find the module root from %s: %v\n", mustGetwd(), err)
		return 1
	}
	dir, err := os.MkdirTemp("", "p2pnode-e2e-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)

	bin = filepath.Join(dir, "p2pnode")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/p2pnode")
	build := exec.Command("go", args...)
	build.Dir = root
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go %v (in %s): %v\n", args, root, err)
		return 1
	}
	return m.Run()
}

func mustGetwd() string {
	wd, err := os.Getwd()
	if err != nil {
		return "?"
	}
	return wd
}
