package control

import (
	"errors"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestParseTarget(t *testing.T) {
	id := "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
	for _, tc := range []struct {
		in      string
		want    Target
		wantErr string
	}{
		{in: id + ":22", want: Target{Peer: mustDecode(t, id), Service: "22"}},
		{in: "movie-night/web", want: Target{Name: "movie-night", Service: "web"}},
		{in: id, wantErr: "expected PEERID:SERVICE"},
		{in: ":22", wantErr: "expected PEERID:SERVICE"},
		{in: "notapeer:22", wantErr: "notapeer"},
		{in: "bad name/web", wantErr: "name"},
		{in: "movie-night/", wantErr: "service"},
	} {
		got, err := ParseTarget(tc.in)
		var ie *InputError
		switch {
		case tc.wantErr == "" && (err != nil || got != tc.want):
			t.Errorf("ParseTarget(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		case tc.wantErr != "" && (!errors.As(err, &ie) || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("ParseTarget(%q) error %v, want bad input saying %q", tc.in, err, tc.wantErr)
		case err == nil && got.String() != tc.in:
			t.Errorf("Target(%q).String() = %q", tc.in, got.String())
		}
	}
}

func mustDecode(t *testing.T, s string) peer.ID {
	t.Helper()
	id, err := peer.Decode(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
