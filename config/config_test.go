package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// Real peer IDs (from fresh Ed25519 keys) for the tests.
const (
	idA = "12D3KooWRATtujoz8BAz4wNJGDM29FYToG8t3UTH1cNK63AK5Ntu"
	idB = "12D3KooWHZeGMb51WTHunqpsmAJyqRv4QuE43i5kJaHJ4YwKyMuH"
	idC = "12D3KooWRRcpVcrZTCVsqKe5cJmzD4aFG42euR739itet1Ua7iz5"
	idD = "12D3KooWExD5hbwiGG4etqrdYj1VwNb1bjxfjHs1MC42KoMnjqs4"
)

// writeConfig writes content to a config.toml in a fresh directory and
// returns its path.
func writeConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), FileName)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// sameContent compares what a config says, ignoring where it came from.
func sameContent(t *testing.T, got, want *File) {
	t.Helper()
	if !reflect.DeepEqual(got.Node, want.Node) {
		t.Errorf("Node = %+v, want %+v", got.Node, want.Node)
	}
	if !reflect.DeepEqual(got.Services, want.Services) {
		t.Errorf("Services = %+v, want %+v", got.Services, want.Services)
	}
	if !reflect.DeepEqual(got.Bootstrap, want.Bootstrap) {
		t.Errorf("Bootstrap = %+v, want %+v", got.Bootstrap, want.Bootstrap)
	}
}

func TestDefault(t *testing.T) {
	f := Default()
	want := Node{
		Listen: []string{
			"/ip4/0.0.0.0/tcp/4001",
			"/ip4/0.0.0.0/udp/4001/quic-v1",
			"/ip6/::/tcp/4001",
			"/ip6/::/udp/4001/quic-v1",
		},
		NATPortMap:        true,
		DHTProtocolPrefix: "/ipfs",
	}
	if !reflect.DeepEqual(f.Node, want) {
		t.Errorf("Default().Node = %+v, want %+v", f.Node, want)
	}
	if f.Services != nil || f.Bootstrap.Listen != nil || f.Absent || f.Path != "" {
		t.Errorf("Default() = %+v, want no services, no [bootstrap] listen, no path", f)
	}
	if err := f.Validate(); err != nil {
		t.Errorf("Default().Validate() = %v", err)
	}
	// Each call returns its own copy.
	f.Node.Listen[0] = "changed"
	if Default().Node.Listen[0] != "/ip4/0.0.0.0/tcp/4001" || defaultListen[0] != "/ip4/0.0.0.0/tcp/4001" {
		t.Error("changing one Default() changed the defaults")
	}
	peers, err := Default().Node.BootstrapPeers()
	if err != nil || peers != nil {
		t.Errorf("Default BootstrapPeers() = %v, %v; want nil, nil (public default peers)", peers, err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	f, err := Load(path)
	if err != nil {
		t.Fatalf("Load(missing) = %v, want defaults", err)
	}
	if !f.Absent || f.Path != path {
		t.Errorf("Absent, Path = %v, %q; want true, %q", f.Absent, f.Path, path)
	}
	sameContent(t, f, Default())
}

func TestLoadUnreadable(t *testing.T) {
	dir := t.TempDir() // a directory cannot be read as a file, even by root
	_, err := Load(dir)
	if err == nil {
		t.Fatal("Load(directory) succeeded")
	}
	var cerr *Error
	if errors.As(err, &cerr) {
		t.Errorf("Load(directory) = *Error %v; want an I/O error, not bad content", err)
	}
	if !strings.Contains(err.Error(), dir) {
		t.Errorf("error %q does not name the file", err)
	}
	if _, err := Load(""); err == nil {
		t.Error(`Load("") succeeded`)
	}
}

func TestLoadEmptyFile(t *testing.T) {
	f, err := Load(writeConfig(t, "# nothing but a comment\n"))
	if err != nil {
		t.Fatal(err)
	}
	if f.Absent {
		t.Error("Absent set for a file that exists")
	}
	sameContent(t, f, Default())
}

const fullConfig = `
[node]
listen = ["/ip4/0.0.0.0/tcp/4002", "/ip4/0.0.0.0/udp/4002/quic-v1"]
bootstrap = [
  "/ip4/203.0.113.7/tcp/4001/p2p/` + idA + `",
  "/dns4/boot.example.net/tcp/4001/p2p/` + idB + `",
  "/ip4/203.0.113.7/udp/4001/quic-v1/p2p/` + idA + `",
]
nat_port_map = false
dht_protocol_prefix = "/myoverlay"

[[service]]
name   = "ssh"
target = "127.0.0.1:22"
allow  = ["` + idC + `", "` + idD + `"]

[[service]]
name   = "web.app_2"
target = "[::1]:8080"
public = true

[[service]]
name   = "22"
target = "backend.internal:65535"

[bootstrap]
listen = ["/ip6/::/tcp/4001"]
`

func TestLoadFullFile(t *testing.T) {
	path := writeConfig(t, fullConfig)
	f, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if f.Absent || f.Path != path {
		t.Errorf("Absent, Path = %v, %q; want false, %q", f.Absent, f.Path, path)
	}
	sameContent(t, f, &File{
		Node: Node{
			Listen: []string{"/ip4/0.0.0.0/tcp/4002", "/ip4/0.0.0.0/udp/4002/quic-v1"},
			Bootstrap: []string{
				"/ip4/203.0.113.7/tcp/4001/p2p/" + idA,
				"/dns4/boot.example.net/tcp/4001/p2p/" + idB,
				"/ip4/203.0.113.7/udp/4001/quic-v1/p2p/" + idA,
			},
			NATPortMap:        false,
			DHTProtocolPrefix: "/myoverlay",
		},
		Services: []Service{
			{Name: "ssh", Target: "127.0.0.1:22", Allow: []string{idC, idD}},
			{Name: "web.app_2", Target: "[::1]:8080", Public: true},
			{Name: "22", Target: "backend.internal:65535"},
		},
		Bootstrap: Bootstrap{Listen: []string{"/ip6/::/tcp/4001"}},
	})

	listen, err := f.Node.ListenAddrs()
	if err != nil || len(listen) != 2 || listen[1].String() != "/ip4/0.0.0.0/udp/4002/quic-v1" {
		t.Errorf("ListenAddrs() = %v, %v", listen, err)
	}

	peers, err := f.Node.BootstrapPeers()
	if err != nil {
		t.Fatal(err)
	}
	// Two peers, in file order, with idA's two addresses merged.
	if len(peers) != 2 || peers[0].ID.String() != idA || peers[1].ID.String() != idB {
		t.Fatalf("BootstrapPeers() = %v; want %s then %s", peers, idA, idB)
	}
	var addrs []string
	for _, a := range peers[0].Addrs {
		addrs = append(addrs, a.String())
	}
	if want := []string{"/ip4/203.0.113.7/tcp/4001", "/ip4/203.0.113.7/udp/4001/quic-v1"}; !slices.Equal(addrs, want) {
		t.Errorf("addresses of %s = %v, want %v", idA, addrs, want)
	}

	allowed, err := f.Services[0].AllowedPeers()
	if err != nil || len(allowed) != 2 || allowed[0].String() != idC || allowed[1].String() != idD {
		t.Errorf("AllowedPeers() = %v, %v", allowed, err)
	}
	if allowed, err := f.Services[1].AllowedPeers(); err != nil || len(allowed) != 0 {
		t.Errorf("AllowedPeers() of a public service = %v, %v", allowed, err)
	}
}

func TestDefaultDenyServiceIsValid(t *testing.T) {
	f, err := Load(writeConfig(t, "[[service]]\nname = \"ssh\"\ntarget = \"127.0.0.1:22\"\n"))
	if err != nil {
		t.Fatalf("a service with no allow list and public = false: %v; want no error (default deny)", err)
	}
	if s := f.Services[0]; len(s.Allow) != 0 || s.Public {
		t.Errorf("service = %+v", s)
	}
}

func TestLoadByteOrderMark(t *testing.T) {
	f, err := Load(writeConfig(t, "\uFEFF[node]\nnat_port_map = false\n"))
	if err != nil {
		t.Fatal(err)
	}
	if f.Node.NATPortMap {
		t.Error("nat_port_map = false was not read")
	}
}

func TestInlineTables(t *testing.T) {
	f, err := Load(writeConfig(t, `node = { listen = ["/ip4/127.0.0.1/tcp/1"] }
service = [{ name = "a", target = "127.0.0.1:1" }, { name = "b", target = "127.0.0.1:2", public = true }]
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Services) != 2 || f.Services[1].Name != "b" || !f.Services[1].Public || f.Node.Listen[0] != "/ip4/127.0.0.1/tcp/1" {
		t.Errorf("got %+v", f)
	}
}

// want is one expected problem: its line, its key and text its message
// must contain.
type want struct {
	line int
	key  string
	msg  string
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    []want
	}{
		{
			name:    "unknown key at top level",
			content: "# comment\nlisen = 1\n",
			want:    []want{{2, "lisen", `unknown key "lisen" at top level`}},
		},
		{
			name:    "node key at top level",
			content: "listen = [\"/ip4/0.0.0.0/tcp/1\"]\n",
			want:    []want{{1, "listen", `unknown key "listen" at top level (it belongs in [bootstrap] or [node])`}},
		},
		{
			name:    "unknown key in node",
			content: "[node]\nlisten = [\"/ip4/0.0.0.0/tcp/1\"]\n\nlisen = [\"x\"]\n",
			want:    []want{{4, "node.lisen", `unknown key "lisen" in [node] (did you mean "listen"?)`}},
		},
		{
			name:    "unknown dotted key in node",
			content: "node.nat_port_mapping = true\n",
			want:    []want{{1, "node.nat_port_mapping", `unknown key "nat_port_mapping" in [node]`}},
		},
		{
			name:    "unknown key in service",
			content: "[[service]]\nname = \"ssh\"\ntaget = \"127.0.0.1:22\"\ntarget = \"127.0.0.1:22\"\n",
			want:    []want{{3, "service[0].taget", `unknown key "taget" in [[service]] "ssh" (did you mean "target"?)`}},
		},
		{
			name:    "unknown key in second service",
			content: "[[service]]\nname = \"a\"\ntarget = \"127.0.0.1:1\"\n[[service]]\nname = \"b\"\ntarget = \"127.0.0.1:2\"\nallowed = []\n",
			want:    []want{{7, "service[1].allowed", `unknown key "allowed" in [[service]] "b" (did you mean "allow"?)`}},
		},
		{
			name:    "unknown key in inline service",
			content: "service = [{ name = \"a\", target = \"127.0.0.1:1\", port = 1 }]\n",
			want:    []want{{1, "service[0].port", `unknown key "port" in [[service]] "a" (known keys: allow, name, protocol, public, target)`}},
		},
		{
			name:    "unknown table",
			content: "[nod]\nlisten = []\n",
			want:    []want{{1, "nod", `unknown table [nod] (did you mean [node]?)`}},
		},
		{
			name:    "unknown array table",
			content: "[[services]]\nname = \"a\"\n",
			want:    []want{{1, "services[0]", `unknown table [[services]] (did you mean [[service]]?)`}},
		},
		{
			name:    "key in wrong case",
			content: "[node]\nListen = [\"/ip4/0.0.0.0/tcp/1\"]\n",
			want:    []want{{2, "node.Listen", `key "Listen" must be written "listen": keys are case-sensitive`}},
		},
		{
			name:    "table in wrong case",
			content: "[Node]\nlisten = [\"/ip4/0.0.0.0/tcp/1\"]\n",
			want:    []want{{1, "Node", `key "Node" must be written "node"`}},
		},
		{
			name:    "listen is a string, not a list",
			content: "[node]\nlisten = \"x\"\n",
			want:    []want{{2, "node.listen", `wrong type for "listen" in [node]: got string, want an array of multiaddr strings`}},
		},
		{
			name:    "listen element is not a string",
			content: "[node]\nlisten = [\n  \"/ip4/0.0.0.0/tcp/1\",\n  4001,\n]\n",
			want:    []want{{4, "node.listen[1]", `wrong type for element 2 of "listen" in [node]: got integer, want a multiaddr string`}},
		},
		{
			name:    "nat_port_map is a string",
			content: "[node]\nnat_port_map = \"yes\"\n",
			want:    []want{{2, "node.nat_port_map", `wrong type for "nat_port_map" in [node]: got string, want true or false`}},
		},
		{
			name:    "allow is a string",
			content: "[[service]]\nname = \"ssh\"\nallow = \"" + idA + "\"\n",
			want:    []want{{3, "service[0].allow", `wrong type for "allow" in [[service]] "ssh": got string, want an array of peer ID strings`}},
		},
		{
			name:    "node is not a table",
			content: "node = 1\n",
			want:    []want{{1, "node", `wrong type for "node" at top level: got integer, want a table ([node])`}},
		},
		{
			name:    "node as an array of tables",
			content: "[[node]]\n",
			want:    []want{{1, "node", "[[node]] must be written [node]"}},
		},
		{
			name:    "TOML syntax error",
			content: "[node]\nlisten = [\"/ip4/0.0.0.0/tcp/1\"\nnat_port_map = true\n",
			want:    []want{{3, "", `invalid TOML at column`}},
		},
		{
			name:    "key defined twice",
			content: "[node]\nnat_port_map = true\nnat_port_map = false\n",
			want:    []want{{3, "node.nat_port_map", `"nat_port_map" in [node] is defined twice`}},
		},
		{
			name:    "bad multiaddr",
			content: "[node]\nlisten = [\"/ip4/0.0.0.0/tcp/4001\", \"0.0.0.0:4001\"]\n",
			want: []want{{2, "node.listen[1]",
				`bad value for "listen" in [node]: "0.0.0.0:4001" is not a valid multiaddr (must begin with /); a valid one looks like "/ip4/0.0.0.0/tcp/4001"`}},
		},
		{
			name:    "bad multiaddr on its own line",
			content: "[node]\nlisten = [\n  \"/ip4/0.0.0.0/tcp/4001\",\n  \"/ip4/0.0.0.0/tcpp/4001\",\n]\n",
			want:    []want{{4, "node.listen[1]", `"/ip4/0.0.0.0/tcpp/4001" is not a valid multiaddr (unknown protocol tcpp)`}},
		},
		{
			name:    "draft QUIC",
			content: "[node]\nlisten = [\"/ip4/0.0.0.0/udp/4001/quic\"]\n",
			want:    []want{{2, "node.listen[0]", `write /quic-v1 instead`}},
		},
		{
			name:    "listen with peer ID",
			content: "[node]\nlisten = [\"/ip4/0.0.0.0/tcp/4001/p2p/" + idA + "\"]\n",
			want:    []want{{2, "node.listen[0]", `ends in /p2p/PEERID, which a listen multiaddr must not`}},
		},
		{
			name:    "empty listen",
			content: "[node]\nlisten = []\n",
			want:    []want{{2, "node.listen", `empty "listen" in [node]: list at least one multiaddr`}},
		},
		{
			name:    "empty bootstrap listen",
			content: "[bootstrap]\nlisten = []\n",
			want:    []want{{2, "bootstrap.listen", `empty "listen" in [bootstrap]`}},
		},
		{
			name:    "bad bootstrap listen",
			content: "[bootstrap]\nlisten = [\"tcp/4001\"]\n",
			want:    []want{{2, "bootstrap.listen[0]", `bad value for "listen" in [bootstrap]: "tcp/4001" is not a valid multiaddr`}},
		},
		{
			name:    "bootstrap without p2p",
			content: "[node]\nbootstrap = [\"/ip4/203.0.113.7/tcp/4001\"]\n",
			want: []want{{2, "node.bootstrap[0]",
				`bad value for "bootstrap" in [node]: "/ip4/203.0.113.7/tcp/4001" has no peer ID: add /p2p/PEERID at the end`}},
		},
		{
			name:    "bootstrap with only a peer ID",
			content: "[node]\nbootstrap = [\"/p2p/" + idA + "\"]\n",
			want:    []want{{2, "node.bootstrap[0]", `has no address to dial`}},
		},
		{
			name:    "bootstrap with bad peer ID",
			content: "[node]\nbootstrap = [\"/ip4/203.0.113.7/tcp/4001/p2p/12D3KooWnope\"]\n",
			want:    []want{{2, "node.bootstrap[0]", `ends in /p2p/12D3KooWnope, which is not a valid peer ID`}},
		},
		{
			name:    "bad STUN server",
			content: "[nat]\nstun = [\"203.0.113.7:3478\",\n  \"stun.example:0\"]\n",
			want:    []want{{3, "nat.stun[1]", `bad value for "stun" in [nat]: "stun.example:0": port "0" is not a number from 1 to 65535`}},
		},
		{
			name:    "unknown key in [nat]",
			content: "[nat]\nstunn = []\n",
			want:    []want{{2, "nat.stunn", `unknown key "stunn" in [nat] (did you mean "stun"?)`}},
		},
		{
			name:    "bad dht_protocol_prefix",
			content: "[node]\ndht_protocol_prefix = \"ipfs\"\n",
			want:    []want{{2, "node.dht_protocol_prefix", `bad value for "dht_protocol_prefix" in [node]: "ipfs" is not a protocol prefix`}},
		},
		{
			name:    "bad peer ID",
			content: "[[service]]\nname = \"ssh\"\ntarget = \"127.0.0.1:22\"\nallow = [\"" + idA + "\", \"12D3KooWnope\"]\n",
			want: []want{{4, "service[0].allow[1]",
				`bad value for "allow" in [[service]] "ssh": "12D3KooWnope" is not a valid peer ID`}},
		},
		{
			name:    "duplicate service",
			content: "[[service]]\nname = \"ssh\"\ntarget = \"127.0.0.1:22\"\n\n[[service]]\nname = \"ssh\"\ntarget = \"127.0.0.1:2222\"\n",
			want: []want{{6, "service[1].name",
				`duplicate service name "ssh" in [[service]] #2: [[service]] #1 (line 1) has it already`}},
		},
		{
			name:    "bad service name",
			content: "[[service]]\nname = \"my service\"\ntarget = \"127.0.0.1:22\"\n",
			want:    []want{{2, "service[0].name", `bad value for "name" in [[service]] #1: service name "my service" is not valid`}},
		},
		{
			name:    "service name too long",
			content: "[[service]]\nname = \"" + strings.Repeat("a", 64) + "\"\ntarget = \"127.0.0.1:22\"\n",
			want:    []want{{2, "service[0].name", `is not valid: use 1 to 63 letters`}},
		},
		{
			name:    "missing name and target",
			content: "[node]\n\n[[service]]\nallow = []\n",
			want: []want{
				{3, "service[0]", `missing "name" in [[service]] #1`},
				{3, "service[0]", `missing "target" in [[service]] #1`},
			},
		},
		{
			name:    "target without port",
			content: "[[service]]\nname = \"web\"\ntarget = \"localhost\"\n",
			want:    []want{{3, "service[0].target", `bad value for "target" in [[service]] "web": "localhost" is not host:port (missing port)`}},
		},
		{
			name:    "target without host",
			content: "[[service]]\nname = \"web\"\ntarget = \":8080\"\n",
			want:    []want{{3, "service[0].target", `":8080" has no host`}},
		},
		{
			name:    "target port out of range",
			content: "[[service]]\nname = \"web\"\ntarget = \"127.0.0.1:65536\"\n",
			want:    []want{{3, "service[0].target", `port "65536" is not a number from 1 to 65535`}},
		},
		{
			name:    "target port zero",
			content: "[[service]]\nname = \"web\"\ntarget = \"127.0.0.1:0\"\n",
			want:    []want{{3, "service[0].target", `port "0" is not a number from 1 to 65535`}},
		},
		{
			name:    "target IPv6 without brackets",
			content: "[[service]]\nname = \"web\"\ntarget = \"::1:80\"\n",
			want:    []want{{3, "service[0].target", `IPv6 address must be in brackets`}},
		},
		{
			name: "several problems at once",
			content: `[node]
listen = ["/ip4/0.0.0.0/tcp/4001", "nope"]
bootstrap = ["/ip4/203.0.113.7/tcp/4001"]
colour = "blue"

[[service]]
name = "ssh"
target = "127.0.0.1"
allow = ["bad-id"]

[[service]]
name = "ssh"
target = "127.0.0.1:22"
`,
			want: []want{
				{2, "node.listen[1]", `"nope" is not a valid multiaddr`},
				{3, "node.bootstrap[0]", `add /p2p/PEERID`},
				{4, "node.colour", `unknown key "colour" in [node]`},
				{8, "service[0].target", `"127.0.0.1" is not host:port`},
				{9, "service[0].allow[0]", `"bad-id" is not a valid peer ID`},
				{12, "service[1].name", `duplicate service name "ssh"`},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, tt.content)
			f, err := Load(path)
			if err == nil {
				t.Fatalf("Load succeeded: %+v", f)
			}
			if f != nil {
				t.Errorf("Load returned a *File with an error")
			}
			var cerr *Error
			if !errors.As(err, &cerr) {
				t.Fatalf("error %v (%T) is not a *config.Error", err, err)
			}
			lines := strings.Split(err.Error(), "\n")
			if len(cerr.Problems) != len(tt.want) || len(lines) != len(tt.want) {
				t.Fatalf("got %d problems (%d lines), want %d:\n%v", len(cerr.Problems), len(lines), len(tt.want), err)
			}
			for i, w := range tt.want {
				p := cerr.Problems[i]
				if p.File != path || p.Line != w.line || p.Key != w.key || !strings.Contains(p.Msg, w.msg) {
					t.Errorf("problem %d = %+v\nwant line %d, key %q, message containing %q", i, p, w.line, w.key, w.msg)
				}
				prefix := "config " + path + ": line "
				if !strings.HasPrefix(lines[i], prefix) || !strings.Contains(lines[i], w.msg) {
					t.Errorf("line %d of the error = %q, want it to start with %q and name the problem", i, lines[i], prefix)
				}
			}
		})
	}
}

func TestErrorMessageExample(t *testing.T) {
	// The shape promised to users: file, line, key.
	path := writeConfig(t, "[node]\nlisen = []\n")
	_, err := Load(path)
	want := "config " + path + `: line 2: unknown key "lisen" in [node] (did you mean "listen"?)`
	if err == nil || err.Error() != want {
		t.Errorf("error = %v\nwant    %s", err, want)
	}
}

func TestProblemString(t *testing.T) {
	tests := []struct {
		p    Problem
		want string
	}{
		{Problem{File: "/c.toml", Line: 7, Key: "node.x", Msg: "m"}, "config /c.toml: line 7: m"},
		{Problem{File: "/c.toml", Key: "node.x", Msg: "m"}, "config /c.toml: m"},
		{Problem{Msg: "m"}, "config: m"},
	}
	for _, tt := range tests {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.p, got, tt.want)
		}
	}
	e := newError([]Problem{{Msg: "no line"}, {Line: 9, Msg: "nine"}, {Line: 2, Msg: "two"}})
	if got, want := e.Error(), "config: line 2: two\nconfig: line 9: nine\nconfig: no line"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if newError(nil) != nil {
		t.Error("newError(nil) != nil")
	}
}

func TestValidateAfterChange(t *testing.T) {
	path := writeConfig(t, "[node]\nlisten = [\"/ip4/0.0.0.0/tcp/4001\"]\nbootstrap = [\"/ip4/203.0.113.7/tcp/4001/p2p/"+idA+"\"]\n")
	f, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	// As a --listen flag would: the value no longer comes from the file,
	// so its problem has no line; values still from the file keep theirs.
	f.Node.Listen = []string{"bogus"}
	f.Node.Bootstrap = append(f.Node.Bootstrap, "/ip4/203.0.113.8/tcp/4001")
	f.Services = append(f.Services, Service{Name: "x", Target: "127.0.0.1:1", Allow: []string{"nope"}})
	err = f.Validate()
	var cerr *Error
	if !errors.As(err, &cerr) || len(cerr.Problems) != 3 {
		t.Fatalf("Validate() = %v, want 3 problems", err)
	}
	for _, p := range cerr.Problems {
		if p.Line != 0 || p.File != path {
			t.Errorf("problem %+v: want line 0 (value not from the file) and the file", p)
		}
	}
	if _, err := f.Node.ListenAddrs(); err == nil {
		t.Error("ListenAddrs() of a bad value succeeded")
	}
	if _, err := f.Node.BootstrapPeers(); err == nil || !strings.Contains(err.Error(), "/p2p/PEERID") {
		t.Errorf("BootstrapPeers() = %v, want an error saying to add /p2p/PEERID", err)
	}
	if _, err := f.Services[0].AllowedPeers(); err == nil {
		t.Error("AllowedPeers() of a bad peer ID succeeded")
	}
}

func TestDefaultTOML(t *testing.T) {
	f, err := parse("default", []byte(DefaultTOML))
	if err != nil {
		t.Fatal(err)
	}
	sameContent(t, f, Default())

	// Uncomment the commented-out keys and tables: the examples in the
	// default file must be valid too.
	commented := regexp.MustCompile(`^# ?(\[|[a-z_]+ *=|\s+"|\])`)
	var b strings.Builder
	n := 0
	for _, line := range strings.Split(DefaultTOML, "\n") {
		if commented.MatchString(line) {
			line = strings.TrimPrefix(strings.TrimPrefix(line, "#"), " ")
			n++
		}
		b.WriteString(line + "\n")
	}
	f, err = parse("default, uncommented", []byte(b.String()))
	if err != nil {
		t.Fatalf("uncommented default config:\n%s\n%v", b.String(), err)
	}
	if n < 15 {
		t.Errorf("uncommented only %d lines", n)
	}
	want := Default()
	want.Node.Bootstrap = []string{"/ip4/203.0.113.7/tcp/4001/p2p/" + idA}
	want.Services = []Service{{Name: "ssh", Target: "127.0.0.1:22", Allow: []string{idC}}}
	want.Bootstrap.Listen = []string{"/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"}
	want.Bootstrap.RelayAllow = []string{idC}
	on := true
	want.Node.BirthdayPunch = &on
	want.NAT.STUN = []string{"203.0.113.7:3478"}
	sameContent(t, f, want)
}

func TestWriteDefault(t *testing.T) {
	path := filepath.Join(t.TempDir(), "home", FileName)
	if err := WriteDefault(path); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", st.Mode().Perm())
	}
	if st, err := os.Stat(filepath.Dir(path)); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("directory: %v, %v; want mode 0700", st.Mode(), err)
	}
	data, _ := os.ReadFile(path)
	if string(data) != DefaultTOML {
		t.Error("written file is not DefaultTOML")
	}
	f, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	sameContent(t, f, Default())

	// Never overwrite.
	if err := os.WriteFile(path, []byte("# mine\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err = WriteDefault(path)
	if !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), "already exists") || !strings.Contains(err.Error(), path) {
		t.Errorf("WriteDefault(existing) = %v; want an error naming the file and saying it exists", err)
	}
	if data, _ := os.ReadFile(path); string(data) != "# mine\n" {
		t.Errorf("existing file overwritten: %q", data)
	}
}

// TestSchemaMatchesFile keeps the key list used in error messages in step
// with the toml tags of File.
func TestSchemaMatchesFile(t *testing.T) {
	var keys []string
	var walk func(prefix string, typ reflect.Type)
	walk = func(prefix string, typ reflect.Type) {
		for i := range typ.NumField() {
			fld := typ.Field(i)
			tag := fld.Tag.Get("toml")
			if !fld.IsExported() || tag == "-" {
				continue
			}
			if tag == "" {
				t.Errorf("field %s has no toml tag", fld.Name)
				continue
			}
			key := strings.TrimPrefix(prefix+"."+tag, ".")
			keys = append(keys, key)
			ft := fld.Type
			if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				walk(key, ft)
			}
		}
	}
	walk("", reflect.TypeFor[File]())
	slices.Sort(keys)
	var known []string
	for k := range schema {
		known = append(known, k)
	}
	slices.Sort(known)
	if !slices.Equal(keys, known) {
		t.Errorf("toml keys of File = %v\nschema             = %v", keys, known)
	}
}

func TestParseHelpers(t *testing.T) {
	// The service-name rule is overlay's (overlay.TestCheckServiceName).
	for _, target := range []string{"127.0.0.1:22", "[::1]:22", "[fe80::1%eth0]:22", "localhost:8080", "db.internal.:5432", "host_1:1", "10.0.0.1:65535"} {
		if err := CheckTarget(target); err != nil {
			t.Errorf("CheckTarget(%q) = %v", target, err)
		}
	}
	for _, target := range []string{"", "22", ":22", "127.0.0.1:", "127.0.0.1:ssh", "127.0.0.1:-1", "127.0.0.1:70000", "::1:22", "[::1:22", "bad host:22", "a..b:1", "-a:1"} {
		if err := CheckTarget(target); err == nil {
			t.Errorf("CheckTarget(%q) succeeded", target)
		}
	}

	// Peer IDs and multiaddrs are node's rules (node.TestParse).
	if addrs, err := ParseListenAddrs([]string{"/ip4/0.0.0.0/tcp/1", "/ip6/::/tcp/1"}); err != nil || len(addrs) != 2 {
		t.Errorf("ParseListenAddrs = %v, %v", addrs, err)
	}
	if _, err := ParseListenAddrs([]string{"/ip4/0.0.0.0/tcp/1", "x"}); err == nil || !strings.Contains(err.Error(), `"x"`) {
		t.Errorf("ParseListenAddrs(bad) = %v", err)
	}
}

func TestServiceProtocol(t *testing.T) {
	f, err := Load(writeConfig(t, "[[service]]\nname = \"dns\"\ntarget = \"127.0.0.1:53\"\nprotocol = \"udp\"\npublic = true\n"))
	if err != nil || len(f.Services) != 1 || f.Services[0].Protocol != "udp" {
		t.Fatalf("protocol = \"udp\": %+v, %v", f, err)
	}
	_, err = Load(writeConfig(t, "[[service]]\nname = \"dns\"\ntarget = \"127.0.0.1:53\"\nprotocol = \"sctp\"\n"))
	if err == nil || !strings.Contains(err.Error(), `line 4: bad value for "protocol"`) {
		t.Fatalf("protocol = \"sctp\": %v; want a bad value error on line 4", err)
	}
}

func TestNames(t *testing.T) {
	f, err := Load(writeConfig(t, "[names]\nmovie-night = [\""+idA+"\", \""+idB+"\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	pins, err := f.PinnedPeers("movie-night")
	if err != nil || len(pins) != 2 || pins[0].String() != idA {
		t.Fatalf("PinnedPeers = %v, %v", pins, err)
	}
	if pins, _ := f.PinnedPeers("other"); pins != nil {
		t.Errorf("PinnedPeers of an unpinned name = %v, want nil", pins)
	}
	_, err = Load(writeConfig(t, "[names]\nmovie-night = [\"12D3KooWnope\"]\n"))
	if err == nil || !strings.Contains(err.Error(), `line 2: bad peer ID for name "movie-night"`) {
		t.Fatalf("bad pinned peer ID: %v", err)
	}
}
