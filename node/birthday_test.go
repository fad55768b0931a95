package node

import "testing"

func TestPunchStrategy(t *testing.T) {
	const (
		eim, adm, apdm, unk = "endpoint-independent", "address-dependent", "address-and-port-dependent", "unknown"
		eif, adf, apdf      = "endpoint-independent", "address-dependent", "address-and-port-dependent"
	)
	cases := []struct {
		name              string
		mine, theirs      punchMsg
		strategy          string
		hardIsMine, check bool
	}{
		{"both cone", punchMsg{Mapping: eim, Filtering: apdf}, punchMsg{Mapping: eim, Filtering: apdf}, strategyDCUtR, false, false},
		{"unknown side", punchMsg{Mapping: unk}, punchMsg{Mapping: apdm}, strategyDCUtR, false, false},
		{"old peer without NAT info", punchMsg{Mapping: apdm}, punchMsg{}, strategyDCUtR, false, false},
		{"both symmetric", punchMsg{Mapping: apdm}, punchMsg{Mapping: adm}, strategyRelay, false, false},
		{"me symmetric, port-restricted peer", punchMsg{Mapping: apdm}, punchMsg{Mapping: eim, Filtering: apdf}, strategyBirthday, true, true},
		{"me port-restricted, symmetric peer", punchMsg{Mapping: eim, Filtering: apdf}, punchMsg{Mapping: apdm}, strategyBirthday, false, true},
		{"me restricted cone, symmetric peer", punchMsg{Mapping: eim, Filtering: adf}, punchMsg{Mapping: adm}, strategyBirthday, false, true},
		{"filtering not known: birthday works for any", punchMsg{Mapping: eim, Filtering: unk}, punchMsg{Mapping: apdm}, strategyBirthday, false, true},
		{"full cone peer: DCUtR gets in", punchMsg{Mapping: apdm}, punchMsg{Mapping: eim, Filtering: eif}, strategyDCUtR, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, hard := punchStrategy(c.mine, c.theirs)
			if got != c.strategy || c.check && hard != c.hardIsMine {
				t.Errorf("punchStrategy = %s, hard side mine %v; want %s, %v", got, hard, c.strategy, c.hardIsMine)
			}
			// Both sides must agree.
			other, otherHard := punchStrategy(c.theirs, c.mine)
			if other != got || got == strategyBirthday && otherHard == hard {
				t.Errorf("the peer picks %s (hard side its own: %v), this side %s (%v)", other, otherHard, got, hard)
			}
		})
	}
}
