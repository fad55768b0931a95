// Package e2etest runs the built p2pnode binary as a user would, for the
// end-to-end tests (test/e2e) and the benchmarks (bench/natlab): it builds
// ./cmd/p2pnode once per test binary (Main), runs it as real processes
// whose output it keeps line by line (Start, Launch, Proc, Lines), and gives
// those processes something to talk to, on loopback or inside a netlab
// namespace (Serve, ListenIn, NetnsDo). It is test support: only tests and
// benchmarks import it.
package e2etest

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/p2pnode/p2pnode/internal/testenv"
)

// BinaryEnv names the environment variable that, with
// Options.BinaryFromEnv, points the tests at an existing p2pnode binary
// instead of building one: P2PNODE_E2E_BINARY=/path/to/p2pnode.
const BinaryEnv = "P2PNODE_E2E_BINARY"

// Options says how Main gets the binary.
type Options struct {
	// Name starts Main's error messages and the temporary directory's name
	// ("e2e", "natlab").
	Name string
	// Race builds with -race, so that the race detector watches the nodes
	// too. Benchmarks leave it off: they measure the binary users run.
	Race bool
	// BinaryFromEnv uses the binary $P2PNODE_E2E_BINARY names, when set,
	// instead of building one.
	BinaryFromEnv bool
	// SkipsInShort says every test skips itself when Short holds: Main then
	// builds nothing.
	SkipsInShort bool
}

// Main is the body of a TestMain: it parses the flags if nobody has yet,
// gets the binary as opts say and stores its absolute path in *bin, runs m,
// and removes the binary it built. It returns the exit code for os.Exit:
// m.Run's, or 1 after a message on stderr if there is no binary.
//
//	func TestMain(m *testing.M) { os.Exit(e2etest.Main(m, e2etest.Options{Name: "e2e"}, &bin)) }
func Main(m *testing.M, opts Options, bin *string) int {
	if !flag.Parsed() {
		flag.Parse()
	}
	if p := os.Getenv(BinaryEnv); opts.BinaryFromEnv && p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %s=%s: %v\n", opts.Name, BinaryEnv, p, err)
			return 1
		}
		*bin = abs
		return m.Run()
	}
	if opts.SkipsInShort && Short() {
		return m.Run()
	}

	root, err := ModuleRoot()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", opts.Name, err)
		return 1
	}
	dir, err := os.MkdirTemp("", "p2pnode-"+opts.Name+"-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", opts.Name, err)
		return 1
	}
	defer os.RemoveAll(dir)

	*bin = filepath.Join(dir, "p2pnode")
	args := []string{"build", "-o", *bin}
	if opts.Race {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/p2pnode")
	build := exec.Command("go", args...)
	build.Dir = root
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "%s: go %s (in %s): %v\n", opts.Name, strings.Join(args, " "), root, err)
		return 1
	}
	return m.Run()
}

// ModuleRoot is the nearest directory at or above the working directory
// (the package's, under go test) that holds go.mod.
func ModuleRoot() (string, error) {
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

// Short is testenv.Short: whether end-to-end tests skip themselves.
func Short() bool { return testenv.Short() }
