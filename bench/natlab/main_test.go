//go:build natbench

// Package natlab is the NAT-traversal benchmark: it runs the real p2pnode
// binary in netlab's namespaces, behind routers of every NAT kind, and
// measures how often and how fast a forward reaches a served port directly.
// It is never part of `go test ./...` (build tag natbench); run it with
// bench/nat-matrix.sh, as root.
package natlab

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// bin is the p2pnode binary under test, built once by TestMain.
var bin string

// TestMain checks the flags, builds ./cmd/p2pnode once (without -race: the benchmark measures
// the binary users run), runs the benchmark and removes the binary.
func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var err error
	if combos, err = selectCombos(); err != nil {
		fmt.Fprintf(os.Stderr, "natlab: %v\n", err)
		return 2
	}
	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintf(os.Stderr, "natlab: %v\n", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "p2pnode-natbench-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "natlab: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)

	bin = filepath.Join(dir, "p2pnode")
	build := exec.Command("go", "build", "-o", bin, "./cmd/p2pnode")
	build.Dir = root
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "natlab: go build -o %s ./cmd/p2pnode (in %s): %v\n", bin, root, err)
		return 1
	}
	return m.Run()
}

// moduleRoot is the nearest directory at or above the working directory
// (the package's, under go test) that holds go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod at or above the working directory")
		}
		dir = parent
	}
}
