package config

import (
	"path/filepath"
	"runtime"
	"testing"
)

// examplesDir returns the repository's configs/ directory, found from this
// file so that the test does not depend on the working directory.
func examplesDir(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test file")
	}
	return filepath.Join(filepath.Dir(file), "..", "configs")
}

// TestExamples loads every configs/*.toml so that the examples never rot.
// A new example needs an entry here saying what it holds.
func TestExamples(t *testing.T) {
	listen := []string{
		"/ip4/0.0.0.0/tcp/4001",
		"/ip4/0.0.0.0/udp/4001/quic-v1",
		"/ip6/::/tcp/4001",
		"/ip6/::/udp/4001/quic-v1",
	}
	expected := map[string]func() *File{
		"serve.toml": func() *File {
			f := Default()
			f.Node.Listen = listen
			f.Node.Bootstrap = []string{
				"/ip4/203.0.113.7/tcp/4001/p2p/" + idA,
				"/ip4/203.0.113.7/udp/4001/quic-v1/p2p/" + idA,
				"/dns4/boot2.example.net/tcp/4001/p2p/" + idB,
			}
			f.Services = []Service{
				{Name: "ssh", Target: "127.0.0.1:22", Allow: []string{idC, idD}},
				{Name: "web", Target: "127.0.0.1:8080", Allow: []string{idC}},
			}
			return f
		},
		"bootstrap.toml": func() *File {
			f := Default()
			f.Node.Bootstrap = []string{"/dns4/boot2.example.net/tcp/4001/p2p/" + idB}
			f.Node.NATPortMap = false
			f.Bootstrap.Listen = listen
			f.Bootstrap.RelayAllow = []string{idC, idD}
			return f
		},
	}

	files, err := filepath.Glob(filepath.Join(examplesDir(t), "*.toml"))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, path := range files {
		name := filepath.Base(path)
		seen[name] = true
		t.Run(name, func(t *testing.T) {
			f, err := Load(path)
			if err != nil {
				t.Fatalf("Load:\n%v", err)
			}
			if f.Absent {
				t.Fatal("Absent set for an existing file")
			}
			want, ok := expected[name]
			if !ok {
				t.Fatalf("no expected content for example %s: add it to TestExamples", name)
			}
			sameContent(t, f, want())

			// Everything an example holds must parse for the node too.
			if _, err := f.Node.ListenAddrs(); err != nil {
				t.Error(err)
			}
			if _, err := f.Node.BootstrapPeers(); err != nil {
				t.Error(err)
			}
			if _, err := ParseListenAddrs(f.Bootstrap.Listen); err != nil {
				t.Error(err)
			}
			for _, s := range f.Services {
				if _, err := s.AllowedPeers(); err != nil {
					t.Error(err)
				}
			}
		})
	}
	for name := range expected {
		if !seen[name] {
			t.Errorf("example %s is missing from %s", name, examplesDir(t))
		}
	}
}
