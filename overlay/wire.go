package overlay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-msgio"
)

// ProtocolID is the libp2p protocol ID of the forward protocol. The major
// version in it changes only with an incompatible wire format; see the
// package documentation for the format.
const ProtocolID protocol.ID = "/p2pnode/forward/1.0.0"

// ServiceName is the libp2p resource-manager service that forward streams
// are attributed to (network.StreamScope.SetService), so that whoever builds
// the host can give forwarding its own stream and memory limits.
const ServiceName = "p2pnode.forward"

// RequestVersion is the first byte of every request body. A listener answers
// [StatusBadRequest] to any other value; it exists so that the request can
// grow fields without a new protocol ID.
const RequestVersion byte = 1

// MaxRequestSize is the largest request body, in bytes, that a listener
// accepts (the varint length prefix is not counted). Larger declared lengths
// are rejected before the body is read.
const MaxRequestSize = 1024

// MaxMessageSize is the largest response message, in bytes. A listener
// truncates longer messages; a dialer rejects a response declaring more.
const MaxMessageSize = 1024

// Status is the listener's one-byte answer to a request. Its values are part
// of the wire format and never change meaning.
type Status uint8

// Status values, as sent on the wire.
const (
	// StatusOK means the target was dialled; bytes follow.
	StatusOK Status = 0
	// StatusDenied means the service exists but the requesting peer is not
	// on its allow list and the service is not public.
	StatusDenied Status = 1
	// StatusNoSuchService means the listener exposes no service of that name.
	StatusNoSuchService Status = 2
	// StatusUnreachable means the service is allowed but the listener could
	// not connect to its target (nothing listening, timeout, ...).
	StatusUnreachable Status = 3
	// StatusBadRequest means the request was malformed, too large, of an
	// unknown version or did not arrive in time.
	StatusBadRequest Status = 4
)

// String returns the human-readable status used in messages and logs:
// "ok", "denied", "no such service", "target unreachable", "bad request",
// or "status N" for a value this version does not know.
func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusDenied:
		return "denied"
	case StatusNoSuchService:
		return "no such service"
	case StatusUnreachable:
		return "target unreachable"
	case StatusBadRequest:
		return "bad request"
	default:
		return fmt.Sprintf("status %d", uint8(s))
	}
}

// request is the decoded request body.
type request struct {
	Service string
}

// response is the decoded response.
type response struct {
	Status  Status
	Message string
}

// errRequestTooLarge is returned by readRequest when the declared length is
// above MaxRequestSize. It wraps msgio.ErrMsgTooLarge.
var errRequestTooLarge = fmt.Errorf("request header is larger than the %d-byte limit: %w", MaxRequestSize, msgio.ErrMsgTooLarge)

// errEmptyRequest is returned for a zero-length request body.
var errEmptyRequest = errors.New("empty request: expected a version byte and a service name")

// encodeRequest returns the request body (without the length prefix).
func encodeRequest(r request) ([]byte, error) {
	if err := CheckServiceName(r.Service); err != nil {
		return nil, fmt.Errorf("service name %q: %w", r.Service, err)
	}
	body := make([]byte, 0, 1+len(r.Service))
	body = append(body, RequestVersion)
	body = append(body, r.Service...)
	return body, nil
}

// decodeRequest parses a request body. It never panics and accepts only
// bodies that encodeRequest could have produced.
func decodeRequest(body []byte) (request, error) {
	if len(body) == 0 {
		return request{}, errEmptyRequest
	}
	if len(body) > MaxRequestSize {
		return request{}, errRequestTooLarge
	}
	if body[0] != RequestVersion {
		return request{}, fmt.Errorf("request version %d is not supported; this peer speaks version %d", body[0], RequestVersion)
	}
	name := string(body[1:])
	if err := CheckServiceName(name); err != nil {
		return request{}, fmt.Errorf("requested service name %q is not valid: %w", name, err)
	}
	return request{Service: name}, nil
}

// writeRequest writes one length-prefixed request in a single Write, so that
// it leaves in one frame (together with the lazy multistream header).
func writeRequest(w io.Writer, r request) error {
	body, err := encodeRequest(r)
	if err != nil {
		return err
	}
	return msgio.NewVarintWriter(w).WriteMsg(body)
}

// readRequest reads one length-prefixed request. A declared length above
// MaxRequestSize fails with errRequestTooLarge after reading only the varint,
// so a hostile peer cannot make the listener buffer anything. It reads
// nothing past the request, so the byte stream that follows is untouched.
//
// go-msgio converts the uint64 length to int before comparing it with the
// limit; on 64-bit platforms go-varint's 63-bit cap keeps that exact.
func readRequest(r io.Reader) (request, error) {
	mr := msgio.NewVarintReaderSize(r, MaxRequestSize)
	body, err := mr.ReadMsg()
	if err != nil {
		if errors.Is(err, msgio.ErrMsgTooLarge) {
			return request{}, errRequestTooLarge
		}
		return request{}, err
	}
	defer mr.ReleaseMsg(body)
	return decodeRequest(body)
}

// appendResponse appends the wire form of resp to b. Messages longer than
// MaxMessageSize are cut at a rune boundary.
func appendResponse(b []byte, resp response) []byte {
	msg := truncateUTF8(resp.Message, MaxMessageSize)
	b = append(b, byte(resp.Status))
	b = binary.AppendUvarint(b, uint64(len(msg)))
	return append(b, msg...)
}

// writeResponse writes resp in a single Write.
func writeResponse(w io.Writer, resp response) error {
	_, err := w.Write(appendResponse(nil, resp))
	return err
}

// readResponse reads one response and nothing past it. The message is
// cleaned of control characters because it is remote text that ends up on a
// user's terminal.
func readResponse(r io.Reader) (response, error) {
	var st [1]byte
	if _, err := io.ReadFull(r, st[:]); err != nil {
		return response{}, err
	}
	mr := msgio.NewVarintReaderSize(r, MaxMessageSize)
	msg, err := mr.ReadMsg()
	if err != nil {
		if errors.Is(err, msgio.ErrMsgTooLarge) {
			return response{}, fmt.Errorf("response message is larger than the %d-byte limit: %w", MaxMessageSize, err)
		}
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return response{}, err
	}
	defer mr.ReleaseMsg(msg)
	return response{Status: Status(st[0]), Message: sanitize(string(msg))}, nil
}

// sanitize replaces non-printable runes (terminal escapes, newlines) with
// '?', so remote text cannot rewrite the user's terminal or forge log lines.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return '?'
	}, s)
}

// truncateUTF8 cuts s to at most n bytes without splitting a rune.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
