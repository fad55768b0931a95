package config

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	toml "github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"

	"github.com/p2pnode/p2pnode/overlay"
)

// keyInfo describes a key of the schema.
type keyInfo struct {
	want string // what the value must be
	elem string // for an array: what each element must be
}

// schema lists every key config.toml may hold, as a dotted path without
// indexes. A test keeps it in step with the toml tags of File.
var schema = map[string]keyInfo{
	"node":                     {want: "a table ([node])"},
	"node.listen":              {want: "an array of multiaddr strings", elem: "a multiaddr string"},
	"node.bootstrap":           {want: "an array of multiaddr strings", elem: "a multiaddr string"},
	"node.nat_port_map":        {want: "true or false"},
	"node.dht_protocol_prefix": {want: "a string"},
	"node.birthday_punch":      {want: "true or false"},
	"service":                  {want: "an array of tables ([[service]])", elem: "a table"},
	"service.name":             {want: "a string"},
	"service.target":           {want: "a string"},
	"service.allow":            {want: "an array of peer ID strings", elem: "a peer ID string"},
	"service.public":           {want: "true or false"},
	"service.protocol":         {want: "\"tcp\" or \"udp\""},
	"bootstrap":                {want: "a table ([bootstrap])"},
	"nat":                      {want: "a table ([nat])"},
	"nat.stun":                 {want: "an array of HOST:PORT strings", elem: "a HOST:PORT string"},
	"names":                    {want: "a table ([names]) of name = [peer IDs]"},
	"bootstrap.listen":         {want: "an array of multiaddr strings", elem: "a multiaddr string"},
	"bootstrap.relay_allow":    {want: "an array of peer ID strings", elem: "a peer ID string"},
	"bootstrap.stun":           {want: "true or false"},
	"bootstrap.stun_port":      {want: "a port number"},
	"bootstrap.stun_alt_port":  {want: "a port number"},
	"bootstrap.stun_alt_ip":    {want: "an IPv4 address string"},
}

// entry is something found in the document at some offset: a key, a table
// header's key, or a value.
type entry struct {
	// segs is the full path, one part per key, with the array index
	// appended to parts that are array elements: ["service[1]", "allow[0]"].
	segs []string
	// own is the number of trailing parts of segs written at this place
	// (the key of a key-value, the name in a table header); the others
	// come from the enclosing table.
	own  int
	kind unstable.Kind
	line int
}

// positions records where every key and value of a document is, so that
// problems can name the line and the key.
type positions struct {
	lineStarts []int
	at         map[int]entry     // by byte offset
	keys       []entry           // every key and table header, in order
	lines      map[string]int    // path -> line of its key, or of the element
	values     map[string]string // path -> string value read from the file
}

// index parses data and records its positions. It stops quietly at a syntax
// error; the decoder reports that error.
func index(data []byte) *positions {
	p := &positions{
		lineStarts: []int{0},
		at:         map[int]entry{},
		lines:      map[string]int{},
		values:     map[string]string{},
	}
	for i, c := range data {
		if c == '\n' {
			p.lineStarts = append(p.lineStarts, i+1)
		}
	}

	var parser unstable.Parser
	parser.Reset(data)
	var table []string
	counts := map[string]int{} // array-table path -> elements so far
	for parser.NextExpression() {
		e := parser.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			names, offs := keyNames(e)
			if len(names) == 0 {
				continue
			}
			var segs []string
			if e.Kind == unstable.ArrayTable {
				segs = resolve(names[:len(names)-1], counts)
				segs = append(segs, names[len(names)-1])
				base := strings.Join(segs, ".")
				n := counts[base]
				counts[base] = n + 1
				segs[len(segs)-1] += "[" + strconv.Itoa(n) + "]"
			} else {
				segs = resolve(names, counts)
			}
			table = segs
			p.recordKey(segs, offs, e.Kind)
		case unstable.KeyValue:
			p.keyValue(table, e)
		}
	}
	return p
}

// keyNames returns the parts of the key of a table header or key-value and
// their offsets.
func keyNames(n *unstable.Node) (names []string, offs []int) {
	it := n.Key()
	for it.Next() {
		k := it.Node()
		names = append(names, string(k.Data))
		offs = append(offs, int(k.Raw.Offset))
	}
	return names, offs
}

// recordKey records a key (or table name) whose parts start at offs, the
// last len(offs) parts of segs.
func (p *positions) recordKey(segs []string, offs []int, kind unstable.Kind) {
	line := p.lineOf(offs[0])
	// Errors about the whole key point at its first part; errors about a
	// part that cannot hold a table (name.x = 1) point at that part.
	first := len(segs) - len(offs)
	for i, off := range offs[1:] {
		p.at[off] = entry{segs: segs[:first+i+2], own: i + 2, kind: kind, line: line}
	}
	p.at[offs[0]] = entry{segs: segs, own: len(offs), kind: kind, line: line}
	p.keys = append(p.keys, entry{segs: segs, own: len(offs), kind: kind, line: line})
	p.lines[strings.Join(segs, ".")] = line
}

// resolve turns the parts of a table name into a path, pointing parts that
// name an array of tables at its last element, as TOML does.
func resolve(names []string, counts map[string]int) []string {
	segs := make([]string, 0, len(names)+1)
	for _, name := range names {
		segs = append(segs, name)
		if n := counts[strings.Join(segs, ".")]; n > 0 {
			segs[len(segs)-1] += "[" + strconv.Itoa(n-1) + "]"
		}
	}
	return segs
}

func (p *positions) keyValue(prefix []string, kv *unstable.Node) {
	names, offs := keyNames(kv)
	segs := append(slices.Clone(prefix), names...)
	p.recordKey(segs, offs, unstable.KeyValue)
	p.value(segs, kv.Value(), p.lineOf(offs[0]))
}

func (p *positions) value(segs []string, v *unstable.Node, line int) {
	path := strings.Join(segs, ".")
	if v.Raw.Length > 0 {
		off := int(v.Raw.Offset)
		p.at[off] = entry{segs: segs, kind: v.Kind, line: p.lineOf(off)}
	}
	switch v.Kind {
	case unstable.String:
		p.values[path] = string(v.Data)
	case unstable.Array:
		i := 0
		for it := v.Children(); it.Next(); {
			c := it.Node()
			if c.Kind == unstable.Comment {
				continue
			}
			cs := slices.Clone(segs)
			cs[len(cs)-1] += "[" + strconv.Itoa(i) + "]"
			cl := line
			if c.Raw.Length > 0 {
				cl = p.lineOf(int(c.Raw.Offset))
			}
			p.lines[strings.Join(cs, ".")] = cl
			p.value(cs, c, cl)
			i++
		}
	case unstable.InlineTable:
		for it := v.Children(); it.Next(); {
			if c := it.Node(); c.Kind == unstable.KeyValue {
				p.keyValue(segs, c)
			}
		}
	}
}

// lineOf returns the 1-based line of a byte offset.
func (p *positions) lineOf(off int) int {
	return sort.Search(len(p.lineStarts), func(i int) bool { return p.lineStarts[i] > off })
}

// offset returns the byte offset of a 1-based line and column, or -1.
func (p *positions) offset(line, col int) int {
	if line < 1 || line > len(p.lineStarts) || col < 1 {
		return -1
	}
	return p.lineStarts[line-1] + col - 1
}

// line returns the line that key was read from, or 0 if it was not read
// from the file or no longer holds the value read (it was changed since).
// value is the current value for string keys, "" for others.
func (p *positions) line(key, value string) int {
	if p == nil {
		return 0
	}
	if v, ok := p.values[key]; ok && v != value {
		return 0
	}
	return p.lines[key]
}

// find returns what is at the position of a decode error and its path: the
// entry's, or else the decoder's key (which has no array indexes).
func (p *positions) find(de *toml.DecodeError) (e entry, segs []string, ok bool) {
	line, col := de.Position()
	if e, ok = p.at[p.offset(line, col)]; ok {
		return e, e.segs, true
	}
	return e, de.Key(), false
}

var indexRE = regexp.MustCompile(`\[\d+\]`)

// loose removes the array indexes from a path: "service[1].allow[0]"
// becomes "service.allow".
func loose(path string) string {
	return indexRE.ReplaceAllString(path, "")
}

// hasIndex reports whether a path part is an array element.
func hasIndex(seg string) bool {
	return strings.HasSuffix(seg, "]") && indexRE.MatchString(seg)
}

// place names, in the words of the file, the table that segs is in: "[node]",
// `[[service]] "ssh"`, "[[service]] #2" or "top level".
func (p *positions) place(segs []string) (where string, rest []string) {
	if len(segs) < 2 {
		return "top level", segs
	}
	switch loose(segs[0]) {
	case "node":
		return "[node]", segs[1:]
	case "bootstrap":
		return "[bootstrap]", segs[1:]
	case "nat":
		return "[nat]", segs[1:]
	case "service":
		if hasIndex(segs[0]) {
			i, _ := strconv.Atoi(strings.TrimSuffix(segs[0][strings.IndexByte(segs[0], '[')+1:], "]"))
			return servicePlace(i, p.values[segs[0]+".name"]), segs[1:]
		}
	}
	return "top level", segs
}

// servicePlace names the i-th (0-based) [[service]] table.
func servicePlace(i int, name string) string {
	if name != "" && overlay.CheckServiceName(name) == nil {
		return fmt.Sprintf("[[service]] %q", name)
	}
	return fmt.Sprintf("[[service]] #%d", i+1)
}

func inPlace(where string) string {
	if where == "top level" {
		return "at top level"
	}
	return "in " + where
}

// unknown turns one error of a toml.StrictMissingError into a Problem.
func (p *positions) unknown(file string, de *toml.DecodeError) Problem {
	e, segs, _ := p.find(de)
	line, _ := de.Position()
	pr := Problem{File: file, Line: line, Key: strings.Join(segs, ".")}
	if len(segs) == 0 {
		pr.Msg = "unknown key: " + strings.TrimPrefix(de.Error(), "toml: ")
		return pr
	}
	where, rest := p.place(segs)
	name := loose(strings.Join(rest, "."))
	if strings.Contains(de.Error(), "missing table") {
		hdr := "[" + loose(pr.Key) + "]"
		if e.kind == unstable.ArrayTable {
			hdr = "[" + hdr + "]"
		}
		pr.Msg = "unknown table " + hdr + hint(where, loose(rest[0]), true)
		return pr
	}
	pr.Msg = fmt.Sprintf("unknown key %q %s%s", name, inPlace(where), hint(where, loose(rest[0]), false))
	return pr
}

// hint suggests what an unknown key or table name in where may have meant.
func hint(where, name string, isTable bool) string {
	table := map[string]string{"[node]": "node", "[bootstrap]": "bootstrap", "[nat]": "nat"}[where]
	if strings.HasPrefix(where, "[[service]]") {
		table = "service"
	}
	var known, parents []string
	for _, k := range slices.Sorted(maps.Keys(schema)) {
		parent, key, found := strings.Cut(k, ".")
		if table == "" && !found {
			known = append(known, tableHeader(k))
		} else if found && parent == table {
			known = append(known, key)
		}
		if found && key == name && table == "" && !isTable {
			// A key of some table written outside of it.
			parents = append(parents, tableHeader(parent))
		}
	}
	if len(parents) > 0 {
		return fmt.Sprintf(" (it belongs in %s)", strings.Join(parents, " or "))
	}
	best, bestD := "", 3
	for _, k := range known {
		if d := distance(strings.ToLower(name), strings.Trim(k, "[]")); d < bestD {
			best, bestD = k, d
		}
	}
	switch {
	case best != "" && table == "":
		return fmt.Sprintf(" (did you mean %s?)", best)
	case best != "":
		return fmt.Sprintf(" (did you mean %q?)", best)
	case table == "":
		return fmt.Sprintf(" (known tables: %s)", strings.Join(known, ", "))
	}
	return fmt.Sprintf(" (known keys: %s)", strings.Join(known, ", "))
}

func tableHeader(name string) string {
	if name == "service" {
		return "[[service]]"
	}
	return "[" + name + "]"
}

// distance is the Levenshtein distance between a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

var typeRE = regexp.MustCompile(`^cannot decode TOML (.+?) into .* of type (.+)$`)

// decodeProblem turns a toml.DecodeError (syntax error, wrong type,
// duplicate key) into a Problem.
func (p *positions) decodeProblem(file string, de *toml.DecodeError) Problem {
	line, col := de.Position()
	msg := strings.TrimPrefix(de.Error(), "toml: ")
	_, segs, ok := p.find(de)
	pr := Problem{File: file, Line: line, Key: strings.Join(segs, ".")}
	switch m := typeRE.FindStringSubmatch(msg); {
	case m != nil && len(segs) > 0:
		return p.typeProblem(pr, segs, ok, m[1], m[2])
	case ok && strings.HasSuffix(msg, "is already defined"):
		where, rest := p.place(segs)
		pr.Msg = fmt.Sprintf("%q %s is defined twice", loose(strings.Join(rest, ".")), inPlace(where))
	case ok && strings.Contains(msg, "cannot store an array table"):
		name := loose(strings.Join(segs, "."))
		pr.Key = name
		pr.Msg = fmt.Sprintf("[[%s]] must be written [%s]: there is one %s table, not an array of them", name, name, name)
	default:
		if !ok {
			pr.Key = ""
		}
		pr.Msg = fmt.Sprintf("invalid TOML at column %d: %s", col, msg)
	}
	return pr
}

// typeProblem fills in pr for a value of the wrong type at segs: got is the
// TOML type found, goType the Go type wanted. indexed is false when the
// decoder points at a value the index does not know.
func (p *positions) typeProblem(pr Problem, segs []string, indexed bool, got, goType string) Problem {
	// Name the longest known key on the path: for `name.x = 1` in a
	// [[service]], that is "name".
	n := len(segs)
	for n > 0 {
		if _, known := schema[loose(strings.Join(segs[:n], "."))]; known {
			break
		}
		n--
	}
	if n > 0 {
		segs = segs[:n]
	}
	pr.Key = strings.Join(segs, ".")
	if l, found := p.lines[pr.Key]; !indexed && found {
		// An array nested in an array: use the line of the key.
		pr.Line = l
	}
	info := schema[loose(pr.Key)]
	where, rest := p.place(segs)
	last := rest[len(rest)-1]
	name := loose(strings.Join(rest, "."))
	if hasIndex(last) && info.elem != "" {
		k, _ := strconv.Atoi(last[strings.LastIndexByte(last, '[')+1 : len(last)-1])
		in := " " + inPlace(where)
		if name == "service" {
			in = ""
		}
		pr.Msg = fmt.Sprintf("wrong type for element %d of %q%s: got %s, want %s", k+1, name, in, got, info.elem)
		return pr
	}
	want := info.want
	if want == "" {
		want = goType
	}
	pr.Msg = fmt.Sprintf("wrong type for %q %s: got %s, want %s", name, inPlace(where), got, want)
	return pr
}

// caseProblems reports keys that match a known key only when case is
// ignored: the decoder accepts them, but "Listen" is not "listen".
func (p *positions) caseProblems(file string) []Problem {
	var problems []Problem
	for _, e := range p.keys {
		canon := ""
		for i, seg := range e.segs {
			path := loose(seg)
			if canon != "" {
				path = canon + "." + path
			}
			if _, ok := schema[path]; ok {
				canon = path
				continue
			}
			right := ""
			for k := range schema {
				if strings.EqualFold(k, path) {
					right = k
				}
			}
			if right == "" {
				break // unknown: the decoder reports it
			}
			canon = right
			if i >= len(e.segs)-e.own {
				// Written here, not inherited from the table header.
				problems = append(problems, Problem{
					File: file,
					Line: e.line,
					Key:  strings.Join(e.segs[:i+1], "."),
					Msg: fmt.Sprintf("key %q must be written %q: keys are case-sensitive",
						loose(seg), right[strings.LastIndexByte(right, '.')+1:]),
				})
			}
		}
	}
	return problems
}
