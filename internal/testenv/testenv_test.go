package testenv

import (
	"testing"
)

// recorder is a testing.TB that records how Missing ended it.
type recorder struct {
	testing.TB
	failed, skipped bool
	msg             string
}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed, r.msg = true, format
}
func (r *recorder) Skipf(format string, args ...any) {
	r.skipped, r.msg = true, format
}

func TestMissing(t *testing.T) {
	for _, ci := range []string{"true", ""} {
		t.Run("CI="+ci, func(t *testing.T) {
			t.Setenv("CI", ci)
			r := &recorder{TB: t}
			Missing(r, "no %s", "frobnicator")
			if ci == "true" && (!r.failed || r.skipped) {
				t.Errorf("under CI=true Missing must fail, not skip (failed %v, skipped %v)", r.failed, r.skipped)
			}
			if ci == "" && (!r.skipped || r.failed) {
				t.Errorf("outside CI Missing must skip, not fail (failed %v, skipped %v)", r.failed, r.skipped)
			}
		})
	}
}

// TestSkipIfShortNeverUnderCI: with CI=true, SkipIfShort lets the test
// run, -short or not.
func TestSkipIfShortNeverUnderCI(t *testing.T) {
	t.Setenv("CI", "true")
	ran := false
	t.Run("inner", func(t *testing.T) {
		SkipIfShort(t, "slow test")
		ran = true
	})
	if !ran {
		t.Error("SkipIfShort skipped a test with CI=true")
	}
}
