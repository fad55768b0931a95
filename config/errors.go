package config

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
)

// Problem is one thing wrong with a config file.
type Problem struct {
	// File is the path of the config file; empty when the configuration
	// did not come from a file.
	File string

	// Line is the 1-based line the problem was found on, or 0 when it is
	// not known (for example for a value set by a flag).
	Line int

	// Key is the dotted path of the key concerned, with 0-based indexes
	// for array elements and [[service]] tables, e.g. "node.listen[1]" or
	// "service[0].allow[2]". Empty when the problem is not about one key
	// (a TOML syntax error).
	Key string

	// Msg says what is wrong and how to fix it. It names the key in the
	// words of the file, e.g. `unknown key "lisen" in [node]`.
	Msg string
}

// String formats the problem as one line:
//
//	config FILE: line N: MSG
func (p Problem) String() string {
	s := "config"
	if p.File != "" {
		s += " " + p.File
	}
	if p.Line > 0 {
		s += ": line " + strconv.Itoa(p.Line)
	}
	return s + ": " + p.Msg
}

// Error is returned by [Load] and [File.Validate] when the configuration is
// bad input: invalid TOML, unknown keys, wrong types or bad values. It holds
// every problem found. Callers map it to exit code 2.
type Error struct {
	// Problems lists what is wrong, ordered by line; problems without a
	// line come last. It is never empty.
	Problems []Problem
}

// Error returns the problems, one per line, without a trailing newline.
func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// newError returns an *Error holding problems sorted by line, or nil when
// there are none.
func newError(problems []Problem) error {
	if len(problems) == 0 {
		return nil
	}
	// Line 0 (not known) sorts last.
	line := func(p Problem) uint { return uint(p.Line - 1) }
	problems = slices.Clone(problems)
	slices.SortStableFunc(problems, func(a, b Problem) int { return cmp.Compare(line(a), line(b)) })
	return &Error{Problems: problems}
}
