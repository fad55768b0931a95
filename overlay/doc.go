// Package overlay is p2pnode's forwarding service: a peer exposes local TCP
// services to chosen peers, and another peer forwards a local TCP port (or
// its stdin/stdout) to one of them, addressed by peer ID.
//
// The package takes a [host.Host] from whoever built it (node/ in p2pnode,
// a plain go-libp2p host in tests); it never builds a host, joins a DHT or
// imports the rest of p2pnode.
//
//   - [Server] is the exposing side: it registers a stream handler for
//     [ProtocolID], checks each request against its [Service] list and allow
//     lists, dials only the exposed target and pumps bytes.
//   - [Dial] is the forwarding side of one connection: it opens a stream,
//     sends the request and returns the stream ready for bytes, or a
//     [*RefusedError] saying why the remote peer refused. When the peer has
//     direct connections over several transports, the stream goes on the
//     cheapest ([WithPreferTransports]: TCP, then QUIC).
//   - [Forwarder] runs [Dial] + [Pump] for every TCP connection accepted on a
//     listener ([Forwarder.Serve]) or for stdin/stdout ([Forwarder.Stdio],
//     for ssh's ProxyCommand).
//   - [Pump] is the full-duplex byte copy with half-close: end-of-stream in
//     one direction becomes a close-write on the other side, and only when
//     both directions have ended are both sides closed. An error (a stream
//     reset, a TCP RST) becomes a reset on both sides.
//
// # Wire format of /p2pnode/forward/1.0.0
//
// One libp2p stream carries one forwarded TCP connection. Varints are
// unsigned LEB128 as in the multiformats unsigned-varint spec (minimal
// encoding, at most 9 bytes), the same framing libp2p uses elsewhere
// (go-msgio).
//
// The dialer writes one request:
//
//	request  = varint(len(body)) body             ; len(body) <= MaxRequestSize (1024 bytes)
//	body     = version service-name
//	version  = %x01                                 ; one byte, RequestVersion
//	service-name = 1*63 bytes matching [A-Za-z0-9][A-Za-z0-9._-]{0,62}
//
// The listener answers with one response:
//
//	response = status varint(len(message)) message ; len(message) <= MaxMessageSize (1024 bytes)
//	status   = one byte: 0 ok, 1 denied, 2 no such service,
//	           3 target unreachable, 4 bad request   (see [Status])
//	message  = UTF-8 text for a human; empty when status is ok
//
// After an ok response both sides copy raw bytes until each direction ends.
// A close-write (FIN) on the stream or on the TCP connection is forwarded as
// a close-write on the other hop; a reset (stream reset, TCP RST) is forwarded
// as a reset. Any other status is final: the listener closes the stream after
// writing it.
//
// Limits on the listener: the request must arrive within the request timeout
// ([WithRequestTimeout], default 10 s) or the stream is answered "bad request"
// and reset. A declared request length above [MaxRequestSize] is rejected
// after reading only the varint (the body is never buffered) and the stream is
// reset. The listener dials nothing but the Target of the named [Service];
// the request carries a service name, never an address.
package overlay
