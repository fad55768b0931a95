package overlay

import (
	"errors"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestParseExpose(t *testing.T) {
	long := strings.Repeat("a", 64)
	tests := []struct {
		spec    string
		want    Service
		wantErr []string // substrings of the error; nil means success
	}{
		{spec: "22", want: Service{Name: "22", Target: "127.0.0.1:22"}},
		{spec: "ssh=127.0.0.1:22", want: Service{Name: "ssh", Target: "127.0.0.1:22"}},
		{spec: "web=[::1]:8080", want: Service{Name: "web", Target: "[::1]:8080"}},
		{spec: "db=10.0.0.5:5432", want: Service{Name: "db", Target: "10.0.0.5:5432"}},
		{spec: "db=db.internal.example:5432", want: Service{Name: "db", Target: "db.internal.example:5432"}},
		{spec: "10.0.0.5:5432", want: Service{Name: "5432", Target: "10.0.0.5:5432"}},
		{spec: "localhost:8080", want: Service{Name: "8080", Target: "localhost:8080"}},
		{spec: "web=8080", want: Service{Name: "web", Target: "127.0.0.1:8080"}},
		{spec: "a.b_c-d=65535", want: Service{Name: "a.b_c-d", Target: "127.0.0.1:65535"}},
		{spec: "022", want: Service{Name: "22", Target: "127.0.0.1:22"}},
		{spec: "ll=[fe80::1%eth0]:22", want: Service{Name: "ll", Target: "[fe80::1%eth0]:22"}},

		{spec: "", wantErr: []string{"empty value", "[NAME=][HOST:]PORT"}},
		{spec: "0", wantErr: []string{`port "0" is not a number between 1 and 65535`, "[NAME=][HOST:]PORT"}},
		{spec: "65536", wantErr: []string{`port "65536"`}},
		{spec: "-1", wantErr: []string{`port "-1"`}},
		{spec: "+22", wantErr: []string{`port "+22"`}},
		{spec: "ssh", wantErr: []string{`port "ssh"`}},
		{spec: "127.0.0.1:ssh", wantErr: []string{`port "ssh"`}},
		{spec: "ssh=", wantErr: []string{"missing port"}},
		{spec: "127.0.0.1:", wantErr: []string{"missing port"}},
		{spec: "=22", wantErr: []string{`service name ""`, "empty name"}},
		{spec: "-x=22", wantErr: []string{`service name "-x"`, "starts with a letter or digit"}},
		{spec: "a b=22", wantErr: []string{`service name "a b"`}},
		{spec: "ssh:x=22", wantErr: []string{`service name "ssh:x"`}},
		{spec: long + "=22", wantErr: []string{"64 bytes long"}},
		{spec: "web=::1:8080", wantErr: []string{"IPv6 address without brackets"}},
		{spec: ":22", wantErr: []string{"empty host"}},
		{spec: "x=a/b:22", wantErr: []string{`host "a/b" is neither`}},
		{spec: "x=[::1:22", wantErr: []string{"is not HOST:PORT"}},
	}
	for _, tc := range tests {
		t.Run(tc.spec, func(t *testing.T) {
			got, err := ParseExpose(tc.spec)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("ParseExpose(%q) error: %v", tc.spec, err)
				}
				if got.Name != tc.want.Name || got.Target != tc.want.Target || got.Public || got.Allow != nil {
					t.Fatalf("ParseExpose(%q) = %+v; want %+v", tc.spec, got, tc.want)
				}
				if err := ValidateServices([]Service{got}); err != nil {
					t.Fatalf("ParseExpose(%q) result does not validate: %v", tc.spec, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseExpose(%q) = %+v; want an error", tc.spec, got)
			}
			contains(t, "error", err.Error(), append(tc.wantErr, "accepted form")...)
		})
	}
}

func TestValidateServices(t *testing.T) {
	good := Service{Name: "ssh", Target: "127.0.0.1:22"}
	tests := []struct {
		name     string
		services []Service
		wantErr  []string // nil: valid
	}{
		{name: "empty list"},
		{name: "one", services: []Service{good}},
		{name: "public", services: []Service{{Name: "web", Target: "[::1]:80", Public: true}}},
		{name: "allow", services: []Service{{Name: "web", Target: "example.com:80", Allow: []peer.ID{"12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"}}}},
		{
			name:     "duplicate",
			services: []Service{good, {Name: "web", Target: "127.0.0.1:80"}, good},
			wantErr:  []string{`service "ssh": defined twice (services #1 and #3)`},
		},
		{
			name: "all problems at once",
			services: []Service{
				{Name: "", Target: "127.0.0.1:22"},
				{Name: "ok", Target: "127.0.0.1"},
				{Name: "port", Target: "127.0.0.1:0"},
				{Name: "bad/name", Target: "127.0.0.1:1"},
				{Name: "peer", Target: "127.0.0.1:1", Allow: []peer.ID{""}},
			},
			wantErr: []string{
				"service #1: bad name: empty name",
				`service "ok": target "127.0.0.1" is not HOST:PORT`,
				`service "port": target "127.0.0.1:0": port "0" is not a number between 1 and 65535`,
				`service "bad/name": bad name`,
				`service "peer": allow list entry "" is not a peer ID`,
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateServices(tc.services)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("ValidateServices: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("ValidateServices = nil; want an error")
			}
			contains(t, "error", err.Error(), tc.wantErr...)
			if got, want := strings.Count(err.Error(), "\n")+1, len(tc.wantErr); got != want {
				t.Errorf("error has %d lines; want one per problem (%d):\n%v", got, want, err)
			}
		})
	}
}

func TestCheckServiceName(t *testing.T) {
	for _, name := range []string{"ssh", "22", "web.app", "a", "A-b_c.d", strings.Repeat("x", 63)} {
		if err := CheckServiceName(name); err != nil {
			t.Errorf("CheckServiceName(%q) = %v", name, err)
		}
	}
	for _, name := range []string{"", "-ssh", ".x", "_x", "my service", "ssh/1", "ssh:x", "é", strings.Repeat("x", 64)} {
		if err := CheckServiceName(name); err == nil {
			t.Errorf("CheckServiceName(%q) succeeded", name)
		}
	}
}

func TestCheckTarget(t *testing.T) {
	for _, target := range []string{"127.0.0.1:22", "[::1]:22", "[fe80::1%eth0]:22", "localhost:8080", "db.internal.:5432", "host_1:1", "10.0.0.1:65535", "127.0.0.1:022"} {
		if err := CheckTarget(target); err != nil {
			t.Errorf("CheckTarget(%q) = %v", target, err)
		}
	}
	tests := []struct {
		target      string
		part, value string // of the *TargetError
		msg         string // in its Error()
	}{
		{"", "", "", "missing port"},
		{"22", "", "", `target "22" is not HOST:PORT`},
		{"::1:22", "", "", "IPv6 address must be in brackets"},
		{"[::1:22", "", "", "missing ']'"},
		{":22", "host", "", "empty host"},
		{"bad host:22", "host", "bad host", `host "bad host" is neither`},
		{"a..b:1", "host", "a..b", "neither"},
		{"-a:1", "host", "-a", "neither"},
		{"127.0.0.1:", "port", "", "missing port"},
		{"127.0.0.1:ssh", "port", "ssh", `port "ssh" is not a number`},
		{"127.0.0.1:+22", "port", "+22", `port "+22"`},
		{"127.0.0.1:-1", "port", "-1", `port "-1"`},
		{"127.0.0.1:0", "port", "0", `target "127.0.0.1:0": port "0" is not a number between 1 and 65535`},
		{"127.0.0.1:70000", "port", "70000", `port "70000"`},
	}
	for _, tc := range tests {
		err := CheckTarget(tc.target)
		var te *TargetError
		if !errors.As(err, &te) {
			t.Errorf("CheckTarget(%q) = %v; want a *TargetError", tc.target, err)
			continue
		}
		if te.Target != tc.target || te.Part != tc.part || te.Value != tc.value {
			t.Errorf("CheckTarget(%q) = %+v; want part %q, value %q", tc.target, te, tc.part, tc.value)
		}
		contains(t, "error", err.Error(), tc.msg)
	}
}
