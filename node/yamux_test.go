package node

import (
	"testing"

	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
)

// TestYamuxTransportWindow: the node's yamux allows the larger window and
// leaves go-libp2p's shared default transport as it was (barestream and
// other hosts in the process still use it).
func TestYamuxTransportWindow(t *testing.T) {
	before := yamux.DefaultTransport.MaxStreamWindowSize
	tr := yamuxTransport()
	if tr.MaxStreamWindowSize != yamuxMaxStreamWindow {
		t.Errorf("MaxStreamWindowSize = %d, want %d", tr.MaxStreamWindowSize, yamuxMaxStreamWindow)
	}
	if tr.MaxStreamWindowSize < tr.InitialStreamWindowSize {
		t.Errorf("MaxStreamWindowSize %d below InitialStreamWindowSize %d", tr.MaxStreamWindowSize, tr.InitialStreamWindowSize)
	}
	if yamux.DefaultTransport.MaxStreamWindowSize != before || before == yamuxMaxStreamWindow {
		t.Errorf("yamux.DefaultTransport changed: MaxStreamWindowSize %d", yamux.DefaultTransport.MaxStreamWindowSize)
	}
}
