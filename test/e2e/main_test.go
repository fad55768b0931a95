// Package e2e drives the built p2pnode binary as a user would: real
// processes, each with its own --home, talking over loopback to a bootstrap
// node of their own. Nothing here reaches outside 127.0.0.1: every node-running
// command gets an explicit --bootstrap (or is the bootstrap node), loopback
// listen addresses and --nat-port-map=false, and no name is resolved.
package e2e

import (
	"os"
	"testing"

	"github.com/p2pnode/p2pnode/internal/e2etest"
)

// bin is the p2pnode binary under test, built once by TestMain.
var bin string

// TestMain builds ./cmd/p2pnode once into a temporary directory (with -race
// when the tests themselves run with -race, so the race detector watches the
// nodes too), runs the tests and removes the binary. Under -short it builds
// nothing, as every test skips itself, except with CI=true, where none does.
//
// P2PNODE_E2E_BINARY=/path/to/p2pnode runs the tests against that binary
// instead of building one.
func TestMain(m *testing.M) {
	os.Exit(e2etest.Main(m, e2etest.Options{
		Name:          "e2e",
		Race:          raceEnabled,
		BinaryFromEnv: true,
		SkipsInShort:  true,
	}, &bin))
}
