//go:build linux

// Package sshtest starts a real OpenSSH sshd on loopback for a test, with
// throw-away host and user keys, and gives the ssh client arguments that log
// in to it. It is test support: only tests import it.
//
// When sshd, ssh or ssh-keygen is missing the test is skipped, except under
// CI=true, where it fails: CI (.ci/run) installs openssh-server and
// openssh-client, so a missing binary there is a broken CI, not a reason to
// silently test less.
package sshtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/p2pnode/p2pnode/internal/e2etest"
	"github.com/p2pnode/p2pnode/internal/testenv"
)

// startTimeout bounds how long Start waits for sshd to accept connections.
const startTimeout = 10 * time.Second

// Server is a running sshd that accepts the generated user key for User.
type Server struct {
	Port int    // TCP port sshd listens on, on 127.0.0.1
	Addr string // "127.0.0.1:PORT"

	SSH     string // absolute path of the ssh client
	User    string // the user that ClientArgs logs in as (the current user)
	UserKey string // private key file accepted by this sshd
	Dir     string // the temporary directory holding keys, config and pid file

	log *e2etest.Lines // sshd's stderr (-e), shown when the test fails
}

// Start starts sshd for t and stops it (and every session it forked) when t
// ends. It fails or skips t if sshd cannot be started; see the package doc.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartWith(t, Options{})
}

// Options place sshd somewhere else than this process's network: inside a
// network namespace of a test lab, say.
type Options struct {
	// Wrap, if set, turns sshd's command into the one to start (for
	// example `ip netns exec NS sshd ...`); it must exec sshd, so that
	// signals reach it.
	Wrap func(ctx context.Context, name string, args ...string) *exec.Cmd
	// Dial, if set, connects to sshd's address from where sshd runs, to
	// wait for its banner.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// Port, if not 0, is the port to listen on (a fresh namespace has them
	// all free); else a free one of this process's network.
	Port int
}

// StartWith is Start with sshd placed as o says.
func StartWith(t testing.TB, o Options) *Server {
	t.Helper()
	if o.Wrap == nil {
		o.Wrap = exec.CommandContext
	}
	if o.Dial == nil {
		o.Dial = func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		}
	}

	sshd := findSSHD(t)
	sshBin := lookPath(t, "ssh", "openssh-client")
	keygen := lookPath(t, "ssh-keygen", "openssh-client")

	dir := t.TempDir()
	hostKey := filepath.Join(dir, "ssh_host_ed25519_key")
	userKey := filepath.Join(dir, "id_ed25519")
	genKey(t, keygen, hostKey)
	genKey(t, keygen, userKey)

	if os.Geteuid() == 0 {
		// Debian's sshd refuses to start as root without its privilege
		// separation directory, which only the service unit creates.
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatalf("sshtest: creating /run/sshd: %v", err)
		}
	}

	s := &Server{
		SSH:     sshBin,
		User:    currentUser(t),
		UserKey: userKey,
		Dir:     dir,
		log:     &e2etest.Lines{},
	}

	// The free port is found by binding port 0 and closing the socket, so
	// another process may take it before sshd binds it: retry a few times.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port := o.Port
		if port == 0 {
			port = freePort(t)
		}
		config := filepath.Join(dir, "sshd_config")
		writeConfig(t, config, port, hostKey, userKey+".pub", filepath.Join(dir, "sshd.pid"))
		if lastErr = s.run(t, o, sshd, config, port); lastErr == nil {
			return s
		}
		t.Logf("sshtest: attempt %d: %v", attempt+1, lastErr)
	}
	t.Fatalf("sshtest: sshd did not start: %v\nsshd log:\n%s", lastErr, s.log.String())
	return nil
}

// ClientArgs returns ssh options that log in to this server with the
// generated key as the current user, hermetically: no user or system ssh
// config, no agent, no known_hosts, no prompts. extra (e.g. "-p", port) comes
// first, so that it can override a default: ssh keeps the first value it is
// given for an option. The caller appends the host and the remote command.
func (s *Server) ClientArgs(extra ...string) []string {
	args := append([]string{}, extra...)
	return append(args,
		"-F", "none",
		"-i", s.UserKey,
		"-o", "UserKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=no",
		"-o", "IdentitiesOnly=yes",
		"-o", "BatchMode=yes",
		"-o", "LogLevel=ERROR",
		"-o", "ConnectTimeout=10",
		"-l", s.User,
	)
}

// Log returns what sshd has written to its stderr so far.
func (s *Server) Log() string { return s.log.String() }

// run starts sshd on port and waits until it answers with an SSH banner. On
// error sshd is stopped again.
func (s *Server) run(t testing.TB, o Options, sshd, config string, port int) error {
	t.Helper()

	// Start's caller owns the lifetime; the context only makes sure the
	// process is killed if something below panics or the test is aborted.
	ctx, cancel := context.WithCancel(context.Background())
	cmd := o.Wrap(ctx, sshd, "-D", "-e", "-f", config)
	cmd.Stdout = s.log
	cmd.Stderr = s.log
	// Own process group, so that stopping kills the per-connection sshd
	// processes too, and none keeps the log pipe open.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		cancel()
		return fmt.Errorf("starting %s: %v", sshd, err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	stop := func() {
		cancel()
		<-exited
	}

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if err := waitBanner(o.Dial, addr, exited, startTimeout); err != nil {
		stop()
		if waitErr != nil {
			err = fmt.Errorf("%v (sshd: %v)", err, waitErr)
		}
		return err
	}

	s.Port, s.Addr = port, addr
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("sshtest: sshd log:\n%s", s.log.String())
		}
	})
	return nil
}

// waitBanner polls addr until something there sends an SSH identification
// line, so that the port is known to be this sshd's and not a stranger's.
func waitBanner(dial func(context.Context, string) (net.Conn, error), addr string, exited <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		select {
		case <-exited:
			return errors.New("sshd exited before accepting connections")
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sshd not answering on %s after %v: %v", addr, timeout, lastErr)
		}
		if lastErr = readBanner(dial, addr, deadline); lastErr == nil {
			return nil
		}
		select {
		case <-exited:
			return errors.New("sshd exited before accepting connections")
		case <-tick.C:
		}
	}
}

func readBanner(dial func(context.Context, string) (net.Conn, error), addr string, deadline time.Time) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := dial(ctx, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(minTime(deadline, time.Now().Add(2*time.Second)))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("reading banner: %v", err)
	}
	if !strings.HasPrefix(line, "SSH-") {
		return fmt.Errorf("not an SSH server, it said %q", line)
	}
	return nil
}

func writeConfig(t testing.TB, path string, port int, hostKey, authorizedKeys, pidFile string) {
	t.Helper()
	config := fmt.Sprintf(`# written by internal/sshtest
ListenAddress 127.0.0.1
Port %d
HostKey %s
PidFile %s
AuthorizedKeysFile %s
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
PrintLastLog no
Banner none
LogLevel INFO
`, port, hostKey, pidFile, authorizedKeys)
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatalf("sshtest: writing %s: %v", path, err)
	}
}

func genKey(t testing.TB, keygen, path string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, keygen, "-q", "-t", "ed25519", "-N", "", "-C", "sshtest", "-f", path).CombinedOutput()
	if err != nil {
		t.Fatalf("sshtest: ssh-keygen -f %s: %v\n%s", path, err, out)
	}
}

func findSSHD(t testing.TB) string {
	t.Helper()
	const debianPath = "/usr/sbin/sshd"
	if fi, err := os.Stat(debianPath); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
		return debianPath
	}
	return lookPath(t, "sshd", "openssh-server")
}

// lookPath returns the absolute path of name (sshd re-executes itself and
// insists on an absolute path), or skips/fails t if it is not installed.
func lookPath(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		if p, err = filepath.Abs(p); err == nil {
			return p
		}
	}
	testenv.Missing(t, "sshtest: %s not found (%v); install %s (.ci/run does)", name, err, pkg)
	return ""
}

func currentUser(t testing.TB) string {
	t.Helper()
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	if name := os.Getenv("USER"); name != "" {
		return name
	}
	t.Fatalf("sshtest: cannot tell the current user's name (uid %d)", os.Getuid())
	return ""
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("sshtest: finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
