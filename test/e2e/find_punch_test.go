//go:build linux

package e2e

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/p2pnode/p2pnode/internal/netlab"
)

// foundJSON is what `p2pnode find --json` prints.
type foundJSON struct {
	Peers []struct {
		Peer     string   `json:"peer"`
		Path     string   `json:"path"`
		Services []string `json:"services"`
		Error    string   `json:"error"`
	} `json:"peers"`
}

// TestFindPunchesAll: find asks every advertising peer at once, and each of
// them is reachable only through the relay (each behind its own
// port-restricted-cone NAT, as the client is), so each must be hole punched.
// All three punches run at once and all three paths end direct: find with a
// node of its own, and find through the client's daemon, whose status then
// shows a direct connection to each peer, as each peer's status shows one
// to the client.
func TestFindPunchesAll(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	ln := newLabNet(t, ctx, "tcp")
	cliHost := ln.lab.AddSite("c", netlab.NATPortRestricted).AddHost("cli")
	client := newNode(t, ctx)
	servers := map[string]node{}
	for _, site := range []string{"a", "b", "d"} {
		h := ln.lab.AddSite(site, netlab.NATPortRestricted).AddHost("srv" + site)
		server, p := ln.serveAs(t, ctx, h, newNode(t, ctx), client.id, "--advertise", "film-club")
		p.WaitStderr(t, 30*time.Second, "advertised name on the DHT")
		servers[server.id] = server
	}

	_, out := findIn(t, ctx, cliHost, client, "film-club", ln.bootAddr, ln.transport)
	checkAllDirect(t, servers, out)

	// Through the daemon the connections stay, and both ends say what
	// they are.
	ln.serveAs(t, ctx, cliHost, client, client.id)
	out, err := cliHost.Command(ctx, bin, "--home", client.home, "find", "film-club", "--json").Output()
	if err != nil {
		t.Fatalf("p2pnode find through the daemon: %v\n%s", err, out)
	}
	checkAllDirect(t, servers, out)
	st, raw := statusOf(t, ctx, client)
	for id, server := range servers {
		if got := st.pathTo(id); got != "direct" {
			t.Errorf("the client's status says the path to %s is %q, want direct:\n%s", id, got, raw)
		}
		if got := statusPath(t, ctx, server, client.id); got != "direct" {
			t.Errorf("the status of %s says the path to the client is %q, want direct", id, got)
		}
	}
}

// checkAllDirect checks that find's JSON lists every server, each with its
// echo service and a direct path.
func checkAllDirect(t *testing.T, servers map[string]node, out []byte) {
	t.Helper()
	var found foundJSON
	if err := json.Unmarshal(out, &found); err != nil {
		t.Fatalf("find --json printed %q: %v", out, err)
	}
	direct := map[string]bool{}
	for _, f := range found.Peers {
		if _, ok := servers[f.Peer]; !ok || f.Error != "" || len(f.Services) != 1 || f.Services[0] != "echo" {
			t.Errorf("find: unexpected entry %+v", f)
			continue
		}
		if f.Path != "direct" {
			t.Errorf("find: peer %s reached by a %s path, want direct (hole punched)", f.Peer, f.Path)
			continue
		}
		direct[f.Peer] = true
	}
	if len(direct) != len(servers) {
		t.Fatalf("find reached %d of the %d advertising peers directly:\n%s", len(direct), len(servers), out)
	}
}
