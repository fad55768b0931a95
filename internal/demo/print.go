package demo

import (
	"fmt"
	"io"
	"time"
)

// Print writes r for a user: the three peers, the path and the figures,
// then the commands that do the same on real machines (as in the README's
// Quick start), where each machine's own identity gives the peer IDs.
func Print(w io.Writer, r Report) {
	intact := fmt.Sprintf("bytes intact (sha256 %x)", r.Sum)
	if !r.Intact {
		intact = fmt.Sprintf("bytes NOT intact (sha256 %x)", r.Sum)
	}
	fmt.Fprintf(w, `Three peers in this process, on 127.0.0.1 only:
  bootstrap  %s  DHT server, circuit relay, AutoNAT
  server     %s  exposes %s=%s to the client only
  client     %s  forwards %s -> server:%s

connected by peer ID alone in %s: %s, %s (%s)
first byte back after %s
%.4g MiB to the echo target and back in %s: %.1f MB/s each way
%s

The same on two machines, with a bootstrap node on a small VPS both reach
(BOOT_ID, SERVER_ID and LAPTOP_ID are the peer IDs these commands print):
  vps$     p2pnode bootstrap --listen /ip4/0.0.0.0/tcp/4001 --listen /ip4/0.0.0.0/udp/4001/quic-v1
  laptop$  p2pnode init
  server$  p2pnode serve --bootstrap /ip4/VPS_IP/tcp/4001/p2p/BOOT_ID --expose ssh=127.0.0.1:22 --allow LAPTOP_ID
  laptop$  p2pnode forward SERVER_ID:ssh --listen 127.0.0.1:2222 --bootstrap /ip4/VPS_IP/tcp/4001/p2p/BOOT_ID
  laptop$  ssh -p 2222 you@127.0.0.1
`,
		r.Bootstrap, r.Server, Service, r.Target, r.Client, r.Forward, Service,
		round(r.ConnectTime), r.Path, r.Transport, r.RemoteAddr, round(r.FirstByte),
		float64(r.Bytes)/(1<<20), round(r.Transfer), float64(r.Bytes)/1e6/max(r.Transfer.Seconds(), 1e-6), intact)
}

// round keeps a duration readable: 73.2ms, 1.2346s.
func round(d time.Duration) time.Duration { return d.Round(100 * time.Microsecond) }
