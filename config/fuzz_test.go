package config

import (
	"errors"
	"testing"
)

// FuzzParse checks that no input makes the loader panic, and that every
// failure is a *Error whose problems all have a message.
func FuzzParse(f *testing.F) {
	f.Add(DefaultTOML)
	f.Add(fullConfig)
	f.Add("[node]\nlisen = 1\n[[service]]\nname.x = 1\n")
	f.Add("service = [{ name = \"a\", bogus = 1 }, 3]\n[Node]\nLISTEN = [[1]]\n")
	f.Add("[[service]]\n[service.x]\n[[service.y]]\nz = 1\n")
	f.Fuzz(func(t *testing.T, content string) {
		file, err := parse("fuzz.toml", []byte(content))
		if err == nil {
			if file == nil {
				t.Fatal("nil file and nil error")
			}
			return
		}
		var cerr *Error
		if !errors.As(err, &cerr) || len(cerr.Problems) == 0 {
			t.Fatalf("error %v (%T) is not a *Error with problems", err, err)
		}
		for _, p := range cerr.Problems {
			if p.Msg == "" {
				t.Fatalf("problem without a message: %+v", p)
			}
		}
	})
}
