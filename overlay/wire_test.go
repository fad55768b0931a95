package overlay

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/multiformats/go-varint"
)

func TestStatusString(t *testing.T) {
	tests := []struct {
		s    Status
		want string
	}{
		{StatusOK, "ok"},
		{StatusDenied, "denied"},
		{StatusNoSuchService, "no such service"},
		{StatusUnreachable, "target unreachable"},
		{StatusBadRequest, "bad request"},
		{Status(200), "status 200"},
	}
	for _, tc := range tests {
		if got := tc.s.String(); got != tc.want {
			t.Errorf("Status(%d).String() = %q; want %q", uint8(tc.s), got, tc.want)
		}
	}
}

func TestRequestRoundTrip(t *testing.T) {
	for _, name := range []string{"22", "ssh", "a.b_c-d", strings.Repeat("x", 63)} {
		var buf bytes.Buffer
		if err := writeRequest(&buf, request{Service: name}); err != nil {
			t.Fatalf("writeRequest(%q): %v", name, err)
		}
		wantLen := 1 + 1 + len(name) // varint, version, name
		if buf.Len() != wantLen {
			t.Errorf("request for %q is %d bytes; want %d", name, buf.Len(), wantLen)
		}
		buf.WriteString("payload") // bytes after the request must stay unread
		got, err := readRequest(&buf)
		if err != nil {
			t.Fatalf("readRequest(%q): %v", name, err)
		}
		if got.Service != name {
			t.Errorf("round trip of %q gave %q", name, got.Service)
		}
		if rest := buf.String(); rest != "payload" {
			t.Errorf("readRequest consumed past the request; left %q", rest)
		}
	}
	if err := writeRequest(io.Discard, request{Service: "bad name"}); err == nil {
		t.Error("writeRequest accepted an invalid service name")
	}
}

// frame returns body with a varint length prefix.
func frame(body []byte) []byte {
	return append(binary.AppendUvarint(nil, uint64(len(body))), body...)
}

func TestReadRequestRejects(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		wantErr string
	}{
		{"empty stream", nil, "EOF"},
		{"empty body", frame(nil), "empty request"},
		{"unknown version", frame([]byte("\x02ssh")), "request version 2 is not supported"},
		{"no name", frame([]byte{RequestVersion}), "empty name"},
		{"address as name", frame([]byte("\x01127.0.0.1:22")), `requested service name "127.0.0.1:22" is not valid`},
		{"name too long", frame(append([]byte{RequestVersion}, strings.Repeat("a", 64)...)), "64 bytes long"},
		{"too large", frame(make([]byte, MaxRequestSize+1)), "larger than the 1024-byte limit"},
		{"huge length", binary.AppendUvarint(nil, 1<<62), "larger than the 1024-byte limit"},
		{"truncated body", frame([]byte("\x01ssh"))[:3], "unexpected EOF"},
		{"non-minimal varint", []byte{0x84, 0x00, 1, 's', 's', 'h'}, "not minimally encoded"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readRequest(bytes.NewReader(tc.in))
			if err == nil {
				t.Fatal("readRequest accepted it")
			}
			contains(t, "error", err.Error(), tc.wantErr)
		})
	}
}

func TestResponseRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   response
		want response
	}{
		{"ok", response{Status: StatusOK}, response{Status: StatusOK}},
		{"denied", response{StatusDenied, `peer X is not on the allow list of service "ssh"`}, response{StatusDenied, `peer X is not on the allow list of service "ssh"`}},
		{"control characters", response{StatusBadRequest, "a\x1b[2Jb\nc"}, response{StatusBadRequest, "a?[2Jb?c"}},
		{"truncated", response{StatusUnreachable, strings.Repeat("é", MaxMessageSize)}, response{StatusUnreachable, strings.Repeat("é", MaxMessageSize/2)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := writeResponse(&buf, tc.in); err != nil {
				t.Fatal(err)
			}
			buf.WriteString("payload")
			got, err := readResponse(&buf)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %+v; want %+v", got, tc.want)
			}
			if rest := buf.String(); rest != "payload" {
				t.Errorf("readResponse consumed past the response; left %q", rest)
			}
		})
	}

	// A response declaring more than MaxMessageSize is refused.
	in := append([]byte{byte(StatusDenied)}, binary.AppendUvarint(nil, MaxMessageSize+1)...)
	if _, err := readResponse(bytes.NewReader(in)); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("oversize response: err = %v; want a limit error", err)
	}
	// A response cut short is an unexpected EOF, not a clean one.
	if _, err := readResponse(bytes.NewReader([]byte{byte(StatusDenied)})); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated response: err = %v; want io.ErrUnexpectedEOF", err)
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// FuzzDecodeRequest checks that the request decoder never panics, never
// accepts a request declaring more than MaxRequestSize bytes, never reads
// more than one varint plus MaxRequestSize bytes, and accepts only requests
// that re-encode to the same bytes.
func FuzzDecodeRequest(f *testing.F) {
	for _, seed := range [][]byte{
		frame([]byte("\x01ssh")),
		frame([]byte("\x0122")),
		frame([]byte("\x02ssh")),
		frame([]byte{RequestVersion}),
		frame(nil),
		frame(make([]byte, MaxRequestSize)),
		frame(make([]byte, MaxRequestSize+1)),
		binary.AppendUvarint(nil, 1<<63-1),
		{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		{0x80, 0x00},
		nil,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cr := &countingReader{r: bytes.NewReader(data)}
		req, err := readRequest(cr)
		if max := varint.MaxLenUvarint63 + MaxRequestSize; cr.n > max {
			t.Fatalf("read %d bytes; at most %d allowed", cr.n, max)
		}
		if declared, _, verr := varint.FromUvarint(data); verr == nil && declared > MaxRequestSize && err == nil {
			t.Fatalf("accepted a request declaring %d bytes", declared)
		}
		if err != nil {
			return
		}
		var buf bytes.Buffer
		if werr := writeRequest(&buf, req); werr != nil {
			t.Fatalf("accepted request %+v does not re-encode: %v", req, werr)
		}
		if !bytes.Equal(buf.Bytes(), data[:cr.n]) {
			t.Fatalf("re-encoding %+v gives %x; read %x", req, buf.Bytes(), data[:cr.n])
		}
	})
}
