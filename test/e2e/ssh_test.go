//go:build linux

package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/p2pnode/p2pnode/internal/netlab"
	"github.com/p2pnode/p2pnode/internal/sshtest"
)

// TestSSHThroughForward logs in to a real sshd through the overlay: a serve
// node exposes the sshd as service "ssh" to one peer, and that peer reaches it
// knowing only the serving peer's ID and the bootstrap node, first with a
// local port (forward --listen), then as ssh's ProxyCommand (forward --stdio).
func TestSSHThroughForward(t *testing.T) {
	ctx := testContext(t, 4*time.Minute)
	sshd := sshtest.Start(t)
	boot := startBootstrap(t, ctx)
	client := newNode(t, ctx)
	server := newNode(t, ctx)
	startServe(t, ctx, server, boot, "--expose", "ssh="+sshd.Addr, "--allow", client.id)
	svc := server.id + ":ssh"

	// Both subtests use client's peer ID, one after the other: the forward
	// process of the first is stopped when it ends.
	t.Run("forward --listen", func(t *testing.T) {
		_, addr := startForward(t, ctx, client, boot, svc)
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		checkSSH(t, ctx, exec.CommandContext, sshd, sshd.ClientArgs("-p", port, "-o", "ConnectTimeout=60"), host)
	})

	// As a user writes it: ssh's host is the peer ID, and the ProxyCommand
	// takes it from %n (ssh lower-cases %h, which breaks base58), or from
	// %h when the host is the lower-case CID form of the peer ID.
	res := run(t, ctx, "--home", server.home, "id", "--cid")
	if res.code != 0 {
		t.Fatalf("p2pnode id --cid: exit %d, stderr %q", res.code, res.stderr)
	}
	cid := strings.TrimSpace(res.stdout)
	if cid != strings.ToLower(cid) || cid == "" {
		t.Fatalf("p2pnode id --cid printed %q, want a lower-case CID", cid)
	}
	for _, tc := range []struct{ name, token, host string }{
		{"ProxyCommand %n with base58 peer ID", "%n", server.id},
		{"ProxyCommand %h with CID peer ID", "%h", cid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			proxy := shellJoin(append([]string{bin}, forwardStdioArgs(client, boot, tc.token+":ssh")...))
			checkSSH(t, ctx, exec.CommandContext, sshd, sshd.ClientArgs("-o", "ProxyCommand="+proxy, "-o", "ConnectTimeout=60"), tc.host)
		})
	}
}

// TestSSHAcrossNATs logs in to a real sshd behind a port-restricted cone
// NAT from a host behind another one, through a forward by peer ID, with
// the lab's links at a 40 ms round trip and 1 % loss (default transports):
// the session works and the forward's path is direct (issue 10).
func TestSSHAcrossNATs(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	ln := newWANLabNet(t, ctx, "default", wanShape{rtt: 40 * time.Millisecond, loss: 1})
	srvHost := ln.lab.AddSite("s", netlab.NATPortRestricted, ln.siteOpts()...).AddHost("srv")
	cliHost := ln.lab.AddSite("c", netlab.NATPortRestricted, ln.siteOpts()...).AddHost("cli")
	sshd := sshtest.StartWith(t, sshtest.Options{
		Wrap: inHost(srvHost),
		Dial: func(ctx context.Context, addr string) (c net.Conn, err error) {
			err = srvHost.Do(func() error {
				var d net.Dialer
				c, err = d.DialContext(ctx, "tcp", addr)
				return err
			})
			return c, err
		},
		Port: 2222, // the namespace is fresh: every port is free
	})
	client := newNode(t, ctx)
	server, _ := ln.serveAs(t, ctx, srvHost, newNode(t, ctx), client.id, "--expose", "ssh="+sshd.Addr)
	target := server.id + ":ssh"
	args := append([]string{"--home", client.home, "forward", target, "--bootstrap", ln.bootAddr, noPortMap, "--listen", tcpListen},
		listenArgs("--p2p-listen", ln.transport, true)...)
	fwd := startIn(t, ctx, cliHost.NS, "forward "+target, args...)
	host, port, err := net.SplitHostPort(waitForwarding(t, fwd, target))
	if err != nil {
		t.Fatal(err)
	}
	checkSSH(t, ctx, inHost(cliHost), sshd, sshd.ClientArgs("-p", port, "-o", "ConnectTimeout=60"), host)
	if !strings.Contains(fwd.Stderr.String(), "path=direct") {
		t.Errorf("the ssh session's forward did not go direct; its log:\n%s", fwd.Stderr.String())
	}
}

// inHost starts commands inside lab host h (`ip netns exec`, which execs
// them, so signals reach them).
func inHost(h *netlab.Host) func(context.Context, string, ...string) *exec.Cmd {
	return func(ctx context.Context, name string, args ...string) *exec.Cmd {
		return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.NS, name}, args...)...)
	}
}

// checkSSH runs a command over ssh (started by command: exec.CommandContext,
// or one that runs it in a lab host) and checks what it printed.
func checkSSH(t *testing.T, ctx context.Context, command func(context.Context, string, ...string) *exec.Cmd, sshd *sshtest.Server, args []string, host string) {
	t.Helper()
	word := fmt.Sprintf("p2pnode-e2e-%016x", rand.Uint64())
	args = append(args, host, "echo "+word+"; uname -s")
	want := word + "\n" + localUname(t, ctx) + "\n"

	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	cmd := command(ctx, sshd.SSH, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	// A ProxyCommand that outlives ssh keeps ssh's stderr open: give up on
	// it after a while rather than hang (Output then fails with
	// exec.ErrWaitDelay).
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.Output()
	if errors.Is(err, exec.ErrWaitDelay) {
		t.Errorf("ssh exited, but a process it started (the ProxyCommand?) still held its stderr %v later", cmd.WaitDelay)
		err = nil
	}
	if err != nil {
		t.Fatalf("ssh %s: %v\n--- stdout:\n%s--- stderr:\n%s---", strings.Join(args, " "), err, out, stderr.String())
	}
	if string(out) != want {
		t.Fatalf("ssh printed %q, want %q\n--- stderr:\n%s---", out, want, stderr.String())
	}
}

// localUname is `uname -s` here, which is also what the sshd's shell says.
func localUname(t *testing.T, ctx context.Context) string {
	t.Helper()
	out, err := exec.CommandContext(ctx, "uname", "-s").Output()
	if err != nil {
		t.Fatalf("uname -s: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// shellJoin quotes args for sh, as ssh runs its ProxyCommand through the
// user's shell.
func shellJoin(args []string) string {
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(quoted, " ")
}
