// Command dhtspy is a Kademlia DHT peer for the end-to-end tests that
// reports every multiaddr the DHT messages it sees carry, so that a test
// can check what a node publishes on the WAN DHT (issue 14: never a
// private address). It is not a DHT implementation: it answers just enough
// of the wire protocol (libp2p/specs kad-dht) for peers to keep it in their
// routing tables and send it their records.
//
//	dhtspy serve -listen MULTIADDR... [-connect MULTIADDR]...
//	    a WAN DHT server: prints "ready MULTIADDR/p2p/ID" once listening,
//	    connects to each -connect peer (so that a DHT server there takes it
//	    into its routing table), then, for each request, prints "msg TYPE
//	    FROM" and one "addr TYPE PEER ADDR" per address the request carries
//	    (ADD_PROVIDER's provider records). It answers FIND_NODE and
//	    GET_PROVIDERS with the -connect peers as the closer ones, as an
//	    honest server that knows only them would, and PING.
//	dhtspy query -peer MULTIADDR -find PEERID -namespace NS
//	    asks the DHT server at -peer for PEERID (FIND_NODE) and for the
//	    providers of NS as go-libp2p's routing discovery keys it, prints
//	    "addr TYPE-reply PEER ADDR" for every address in the replies, and
//	    "providers N" with the number of provider records.
//
// Both exit with 1 and a message on stderr on a usage or network error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p"
	pb "github.com/libp2p/go-libp2p-kad-dht/pb"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-msgio"
	"github.com/libp2p/go-msgio/pbio"
	"github.com/multiformats/go-multihash"
	"google.golang.org/protobuf/proto"
)

// wanProto is the WAN DHT protocol of the public Amino DHT, which p2pnode's
// default prefix "/ipfs" gives.
const wanProto protocol.ID = "/ipfs/kad/1.0.0"

// ioTimeout bounds every read and write on a stream.
const ioTimeout = 30 * time.Second

func main() {
	if len(os.Args) < 2 {
		fail(errors.New("usage: dhtspy serve|query ..."))
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "query":
		err = query(os.Args[2:])
	default:
		err = fmt.Errorf("unknown subcommand %q: want serve or query", os.Args[1])
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "dhtspy:", err)
	os.Exit(1)
}

// out serialises stdout lines from the stream handlers.
var out sync.Mutex

func say(format string, args ...any) {
	out.Lock()
	defer out.Unlock()
	fmt.Printf(format+"\n", args...)
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var listen, connect listFlag
	fs.Var(&listen, "listen", "listen multiaddr (repeatable)")
	fs.Var(&connect, "connect", "multiaddr with /p2p/ID of a peer to connect to and name as closer (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(listen) == 0 {
		return errors.New("serve: give at least one -listen multiaddr")
	}
	for _, c := range connect {
		ai, err := peer.AddrInfoFromString(c)
		if err != nil {
			return fmt.Errorf("serve: -connect %q: %w", c, err)
		}
		closer = append(closer, *ai)
	}
	h, err := libp2p.New(libp2p.ListenAddrStrings(listen...))
	if err != nil {
		return fmt.Errorf("start host: %w", err)
	}
	defer h.Close()
	h.SetStreamHandler(wanProto, handle)
	for _, a := range h.Addrs() {
		say("ready %s/p2p/%s", a, h.ID())
	}
	for _, ai := range closer {
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		err := h.Connect(ctx, ai)
		cancel()
		if err != nil {
			return fmt.Errorf("connect to %s: %w", ai.ID, err)
		}
		say("connected %s", ai.ID)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	return nil
}

// closer are the peers FIND_NODE and GET_PROVIDERS replies name; set
// before the handler is.
var closer []peer.AddrInfo

// handle answers one stream's requests until the peer closes it.
func handle(s network.Stream) {
	defer s.Close()
	from := s.Conn().RemotePeer()
	r := msgio.NewVarintReaderSize(s, network.MessageSizeMax)
	defer r.Close()
	for {
		_ = s.SetDeadline(time.Now().Add(ioTimeout))
		b, err := r.ReadMsg()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				_ = s.Reset()
			}
			return
		}
		var req pb.Message
		err = proto.Unmarshal(b, &req)
		r.ReleaseMsg(b)
		if err != nil {
			_ = s.Reset()
			return
		}
		say("msg %s %s", req.GetType(), from)
		report(req.GetType().String(), &req)
		var resp *pb.Message
		switch req.GetType() {
		case pb.Message_FIND_NODE, pb.Message_GET_PROVIDERS, pb.Message_GET_VALUE:
			resp = pb.NewMessage(req.GetType(), req.GetKey(), 0)
			if req.GetType() != pb.Message_GET_VALUE {
				resp.CloserPeers = pb.RawPeerInfosToPBPeers(closer)
			}
		case pb.Message_PING, pb.Message_PUT_VALUE:
			resp = &req
		}
		if resp != nil {
			if err := pbio.NewDelimitedWriter(s).WriteMsg(resp); err != nil {
				_ = s.Reset()
				return
			}
		}
	}
}

// report prints every address in m's peer records.
func report(kind string, m *pb.Message) {
	for _, p := range append(append([]*pb.Message_Peer(nil), m.GetCloserPeers()...), m.GetProviderPeers()...) {
		ai := pb.PBPeerToPeerInfo(p)
		for _, a := range ai.Addrs {
			say("addr %s %s %s", kind, ai.ID, a)
		}
	}
}

func query(args []string) error {
	fs := flag.NewFlagSet("query", flag.ContinueOnError)
	target := fs.String("peer", "", "multiaddr of the DHT server to ask, with /p2p/ID")
	find := fs.String("find", "", "peer ID to look up with FIND_NODE")
	ns := fs.String("namespace", "", "routing-discovery namespace whose providers to ask for")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ai, err := peer.AddrInfoFromString(*target)
	if err != nil {
		return fmt.Errorf("query: -peer %q: %w", *target, err)
	}
	id, err := peer.Decode(*find)
	if err != nil {
		return fmt.Errorf("query: -find %q: %w", *find, err)
	}
	// As go-libp2p's discovery/routing turns a namespace into a CID.
	mh, err := multihash.Sum([]byte(*ns), multihash.SHA2_256, -1)
	if err != nil {
		return err
	}
	key := cid.NewCidV1(cid.Raw, mh).Hash()

	h, err := libp2p.New(libp2p.NoListenAddrs)
	if err != nil {
		return fmt.Errorf("start host: %w", err)
	}
	defer h.Close()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	if err := h.Connect(ctx, *ai); err != nil {
		return fmt.Errorf("connect to %s: %w", ai.ID, err)
	}
	if _, err := ask(ctx, h, ai.ID, pb.NewMessage(pb.Message_FIND_NODE, []byte(id), 0)); err != nil {
		return err
	}
	resp, err := ask(ctx, h, ai.ID, pb.NewMessage(pb.Message_GET_PROVIDERS, key, 0))
	if err != nil {
		return err
	}
	say("providers %d", len(resp.ProviderPeers))
	return nil
}

// ask sends req to p on a stream of its own and reports the reply's
// addresses.
func ask(ctx context.Context, h host.Host, p peer.ID, req *pb.Message) (*pb.Message, error) {
	s, err := h.NewStream(ctx, p, wanProto)
	if err != nil {
		return nil, fmt.Errorf("open %s stream: %w", wanProto, err)
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(ioTimeout))
	if err := pbio.NewDelimitedWriter(s).WriteMsg(req); err != nil {
		return nil, fmt.Errorf("send %s: %w", req.GetType(), err)
	}
	var resp pb.Message
	if err := pbio.NewDelimitedReader(s, network.MessageSizeMax).ReadMsg(&resp); err != nil {
		return nil, fmt.Errorf("read the reply to %s: %w", req.GetType(), err)
	}
	report(req.GetType().String()+"-reply", &resp)
	return &resp, nil
}
