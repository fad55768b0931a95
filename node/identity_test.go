package node

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestIdentityCreateLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "home", IdentityFileName)
	key, err := CreateIdentity(path)
	if err != nil {
		t.Fatalf("CreateIdentity: %v", err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("key file mode = %04o, want 0600", perm)
	}
	want, _ := PeerIDOf(key)
	for i := 0; i < 2; i++ { // the peer ID is stable across restarts
		loaded, err := LoadIdentity(path)
		if err != nil {
			t.Fatalf("LoadIdentity: %v", err)
		}
		if got, _ := PeerIDOf(loaded); got != want {
			t.Fatalf("peer ID after reload = %s, want %s", got, want)
		}
	}
	if _, err := CreateIdentity(path); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second CreateIdentity error = %v, want one wrapping fs.ErrExist", err)
	}
	if again, _ := LoadIdentity(path); func() bool { id, _ := PeerIDOf(again); return id != want }() {
		t.Fatal("CreateIdentity replaced an existing key")
	}
}

func TestLoadIdentityErrors(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.key")
	if _, err := CreateIdentity(good); err != nil {
		t.Fatal(err)
	}
	loose := filepath.Join(dir, "loose.key")
	raw, _ := os.ReadFile(good)
	if err := os.WriteFile(loose, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(loose, 0o644); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage.key")
	if err := os.WriteFile(garbage, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path string
		want       []string
		is         error
	}{
		{"missing", filepath.Join(dir, "none.key"), []string{"p2pnode init"}, ErrNoIdentity},
		{"readable by others", loose, []string{"accessible by others", "chmod 600"}, nil},
		{"not a key", garbage, []string{"not a libp2p private key"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadIdentity(tt.path)
			if err == nil {
				t.Fatal("LoadIdentity succeeded, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v does not wrap %v", err, tt.is)
			}
		})
	}
}
