package e2e

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"testing"
	"time"
)

// bulkSize is how many bytes go each way: 64 MiB in CI, or
// P2PNODE_E2E_BULK_MIB MiB (the 1 GiB run: P2PNODE_E2E_BULK_MIB=1024
// go test -run TestBulkBothWays -timeout 30m ./test/e2e/).
var bulkSize = func() int64 {
	if n, err := strconv.Atoi(os.Getenv("P2PNODE_E2E_BULK_MIB")); err == nil && n > 0 {
		return int64(n) << 20
	}
	return 64 << 20
}()

// transfer is what a target saw on one connection.
type transfer struct {
	sent, received digest
	err            error
}

// TestBulkBothWays pushes bulkSize bytes each way at once through a forward and
// checks both byte streams end to end, and that a half-close travels: a
// target that closes its write side at once still gets all the client sends.
func TestBulkBothWays(t *testing.T) {
	ctx := testContext(t, 6*time.Minute)

	// bulk sends its own bulkSize bytes while it reads the client's to EOF.
	bulkDone := make(chan transfer, 1)
	bulk := startTarget(t, func(c *net.TCPConn) {
		_ = c.SetDeadline(time.Now().Add(4 * time.Minute))
		sent, received, err := exchange(c, pseudoRandom("target", bulkSize))
		bulkDone <- transfer{sent: sent, received: received, err: err}
	})

	// halfclose greets, closes its write side at once, then reads to EOF.
	greeting := []byte("hello from a target that will not write again\n")
	halfDone := make(chan transfer, 1)
	halfclose := startTarget(t, func(c *net.TCPConn) {
		_ = c.SetDeadline(time.Now().Add(4 * time.Minute))
		var tr transfer
		if _, tr.err = c.Write(greeting); tr.err == nil {
			if tr.err = c.CloseWrite(); tr.err == nil {
				tr.sent = digestOf(greeting)
				tr.received, tr.err = receiveAll(c)
			}
		}
		halfDone <- tr
	})

	boot := startBootstrap(t, ctx)
	server := newNode(t, ctx)
	client1, client2 := newNode(t, ctx), newNode(t, ctx)
	startServe(t, ctx, server, boot,
		"--expose", "bulk="+bulk.Addr, "--expose", "halfclose="+halfclose.Addr,
		"--allow", client1.id, "--allow", client2.id)
	// Two clients, so that the two forwards can run at once without sharing
	// a peer ID.
	fwdBulk := spawnForward(t, ctx, client1, boot, server.id+":bulk")
	fwdHalf := spawnForward(t, ctx, client2, boot, server.id+":halfclose")
	bulkAddr := waitForwarding(t, fwdBulk, server.id+":bulk")
	halfAddr := waitForwarding(t, fwdHalf, server.id+":halfclose")

	t.Run(fmt.Sprintf("%d MiB each way", bulkSize>>20), func(t *testing.T) {
		c := dial(t, bulkAddr, 4*time.Minute)
		start := time.Now()
		sent, received, err := exchange(c, pseudoRandom("client", bulkSize))
		if err != nil {
			t.Fatalf("client: %v (sent %v, received %v)", err, sent, received)
		}
		tr := waitTransfer(t, bulkDone)
		t.Logf("%d MiB each way in %v", bulkSize>>20, time.Since(start).Round(time.Millisecond))
		checkSame(t, "client → target", sent, tr.received)
		checkSame(t, "target → client", tr.sent, received)
	})

	t.Run("target closes its write side first", func(t *testing.T) {
		c := dial(t, halfAddr, 4*time.Minute)
		sent, received, err := exchange(c, pseudoRandom("client, half-closed", bulkSize/4))
		if err != nil {
			t.Fatalf("client: %v (sent %v, received %v)", err, sent, received)
		}
		tr := waitTransfer(t, halfDone)
		checkSame(t, "target → client", tr.sent, received)
		checkSame(t, "client → target", sent, tr.received)
	})
}

func waitTransfer(t *testing.T, ch <-chan transfer) transfer {
	t.Helper()
	select {
	case tr := <-ch:
		if tr.err != nil {
			t.Fatalf("target: %v (sent %v, received %v)", tr.err, tr.sent, tr.received)
		}
		return tr
	case <-time.After(time.Minute):
		t.Fatal("the client is done but the target still is not, a minute later")
		return transfer{}
	}
}

func checkSame(t *testing.T, what string, sent, received digest) {
	t.Helper()
	if sent != received {
		t.Errorf("%s: sent %v, received %v", what, sent, received)
	}
}
