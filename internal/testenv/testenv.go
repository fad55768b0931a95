// Package testenv is the one rule for a test that lacks something on the
// machine it runs on (a tool, a second loopback address, root): under
// CI=true, where .ci/run installs and sets up everything the tests need, it
// fails the test; on a developer's machine it skips it, saying what is
// missing. Tests never call t.Skip for a missing capability themselves.
package testenv

import (
	"fmt"
	"os"
	"testing"
)

// CI reports whether the tests run in CI (the environment variable CI is
// "true", as .ci/run's caller sets it).
func CI() bool { return os.Getenv("CI") == "true" }

// Missing ends t for a capability the machine lacks, described by format
// and args: t.Fatal under CI (a missing capability there is a broken CI
// setup, not a reason to test less), t.Skip elsewhere.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if CI() {
		t.Fatalf("%s (CI=true: .ci/run must provide it)", msg)
		return
	}
	t.Skipf("%s; skipping (set CI=true to make this a failure)", msg)
}

// Short reports whether slow tests skip themselves: under -short, except
// with CI=true, because CI runs everything. It needs the flags parsed.
func Short() bool { return testing.Short() && !CI() }

// SkipIfShort skips t under -short (see Short), saying why; under CI=true
// it never skips.
func SkipIfShort(t testing.TB, why string) {
	t.Helper()
	if Short() {
		t.Skipf("%s: skipped in -short mode (CI=true runs it)", why)
	}
}
