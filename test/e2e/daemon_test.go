package e2e

import (
	"bytes"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/p2pnode/p2pnode/internal/e2etest"
)

// TestForwardThroughDaemon: with serve running in a home, forward in the
// same home goes through that daemon instead of putting the same peer ID
// online a second time, with --listen and with --stdio.
func TestForwardThroughDaemon(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	tg := startTarget(t, func(c *net.TCPConn) { _, _ = io.Copy(c, c); _ = c.CloseWrite() })
	bootNode, boot := startBootstrapNode(t, ctx)
	client, server := newNode(t, ctx), newNode(t, ctx)
	uecho, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { uecho.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := uecho.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = uecho.WriteTo(buf[:n], from)
		}
	}()
	srv := startServe(t, ctx, server, boot, "--expose", "echo="+tg.Addr, "--expose", "udp:uecho="+uecho.LocalAddr().String(),
		"--allow", client.id, "--advertise", "daemon-test")
	startServe(t, ctx, client, boot) // the daemon of the forwarding peer's home

	fwd := start(t, ctx, "forward through daemon", "--home", client.home, "forward", server.id+":echo", "--listen", tcpListen)
	addr := waitForwarding(t, fwd, server.id+":echo")
	fwd.WaitStderr(t, 10*time.Second, "forwarding through the p2pnode daemon")
	c := dial(t, addr, time.Minute)
	sent, received, err := exchange(c, pseudoRandom("daemon", 1<<20))
	c.Close()
	if err != nil || sent != received {
		t.Fatalf("echo through the daemon's forward: sent %v, got %v, %v", sent, received, err)
	}

	// --stdio, as ssh's ProxyCommand runs it.
	cmd := exec.CommandContext(ctx, bin, "--home", client.home, "forward", "--stdio", server.id+":echo")
	cmd.Env = e2etest.ChildEnv()
	cmd.Stdin = strings.NewReader("through the daemon's stdio\n")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || string(out) != "through the daemon's stdio\n" {
		t.Fatalf("forward --stdio through the daemon: %q, %v\nstderr: %s", out, err, stderr.String())
	}

	// --persist: the daemon keeps the forward after the command exits,
	// until --close.
	res := run(t, ctx, "--home", client.home, "forward", "--persist", server.id+":echo", "--listen", tcpListen)
	m := forwardingLine.FindStringSubmatch(strings.SplitN(res.stdout, "\n", 2)[0])
	if res.code != 0 || m == nil {
		t.Fatalf("forward --persist: exit %d, stdout %q, stderr %q", res.code, res.stdout, res.stderr)
	}
	kept := m[1]
	c = dial(t, kept, time.Minute)
	sent, received, err = exchange(c, pseudoRandom("persist", 64<<10))
	c.Close()
	if err != nil || sent != received {
		t.Fatalf("echo through the persistent forward: sent %v, got %v, %v", sent, received, err)
	}
	// status lists it, in JSON and for a person.
	st, _ := statusOf(t, ctx, client)
	if len(st.PersistentForwards) != 1 || st.PersistentForwards[0].Listen != kept ||
		st.PersistentForwards[0].Target != server.id+":echo" || st.PersistentForwards[0].Peer != server.id {
		t.Errorf("status --json lists persistent forwards %+v, want the one on %s to %s:echo", st.PersistentForwards, kept, server.id)
	}
	if res := run(t, ctx, "--home", client.home, "status"); !strings.Contains(res.stdout, "persistent forwards") ||
		!strings.Contains(res.stdout, kept+" -> "+server.id+":echo") {
		t.Errorf("status does not show the persistent forward on %s:\n%s", kept, res.stdout)
	}
	if res := run(t, ctx, "--home", client.home, "forward", "--close", kept); res.code != 0 {
		t.Fatalf("forward --close %s: exit %d, stderr %q", kept, res.code, res.stderr)
	}
	if st, _ := statusOf(t, ctx, client); len(st.PersistentForwards) != 0 {
		t.Errorf("status still lists persistent forwards after --close: %+v", st.PersistentForwards)
	}
	if c, err := net.DialTimeout("tcp", kept, 2*time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts after forward --close", kept)
	}
	if res := run(t, ctx, "--home", client.home, "forward", "--close", kept); res.code == 0 {
		t.Errorf("a second forward --close %s succeeded", kept)
	}

	// --udp through the daemon.
	ufwd := start(t, ctx, "forward --udp through daemon", "--home", client.home, "forward", "--udp", server.id+":uecho", "--listen", tcpListen)
	uline := ufwd.WaitLine(t, lookupWait, `"forwarding udp ..."`, func(l string) bool { return strings.HasPrefix(l, "forwarding udp ") })
	uc, err := net.Dial("udp", strings.Fields(uline)[2])
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	_ = uc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := uc.Write([]byte("datagram via the daemon")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	if n, err := uc.Read(buf); err != nil || string(buf[:n]) != "datagram via the daemon" {
		t.Errorf("UDP echo through the daemon: %q, %v", buf[:n], err)
	}

	// find goes through the daemon too.
	srv.WaitStderr(t, 30*time.Second, "advertised name on the DHT")
	res = run(t, ctx, "--home", client.home, "find", "daemon-test")
	if res.code != 0 || !strings.Contains(res.stdout, server.id) || !strings.Contains(res.stdout, "echo") ||
		!strings.Contains(res.stderr, "through the p2pnode daemon") {
		t.Errorf("find through the daemon: exit %d\nstdout: %s\nstderr: %s", res.code, res.stdout, res.stderr)
	}

	// One peer ID, online once: the bootstrap node sees one connection from
	// the forwarding peer, the daemon's.
	st, _ = statusOf(t, ctx, bootNode)
	conns := 0
	for _, c := range st.Connections {
		if c.Peer == client.id {
			conns++
		}
	}
	if conns != 1 {
		t.Errorf("the bootstrap node has %d connections from %s, want 1 (the daemon's)", conns, client.id)
	}
}
