package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/libp2p/go-libp2p/gologshim"
	"github.com/spf13/cobra"
)

// globalFlags are the flags every subcommand has.
type globalFlags struct {
	home      string
	verbose   int
	logFormat string

	logger *slog.Logger
	// level is p2pnode's own log level; a command may raise it.
	level slog.LevelVar
}

func (g *globalFlags) register(root *cobra.Command) {
	pf := root.PersistentFlags()
	pf.StringVar(&g.home, "home", "", "directory with identity.key and config.toml (env P2PNODE_HOME, default $XDG_CONFIG_HOME/p2pnode)")
	pf.CountVarP(&g.verbose, "verbose", "v", "more log detail; -vv also shows libp2p's debug logs")
	pf.StringVar(&g.logFormat, "log-format", "text", "log format on stderr: text or json")
}

// setup resolves the home directory and installs the logger. Logs go to
// stderr only: stdout carries results, and the byte stream in --stdio mode.
func (g *globalFlags) setup(cmd *cobra.Command) error {
	if g.home == "" {
		g.home = os.Getenv("P2PNODE_HOME")
	}
	if g.home == "" {
		dir, err := os.UserConfigDir()
		if err != nil {
			return usagef("cannot find a home directory (%v); pass --home DIR or set P2PNODE_HOME", err)
		}
		g.home = filepath.Join(dir, "p2pnode")
	}
	abs, err := filepath.Abs(g.home)
	if err != nil {
		return usagef("bad --home %q: %v", g.home, err)
	}
	g.home = abs
	if g.verbose > 0 {
		g.level.Set(slog.LevelDebug)
	}
	h, err := newLogHandler(cmd.ErrOrStderr(), g.logFormat, &g.level)
	if err != nil {
		return err
	}
	g.logger = slog.New(h)
	slog.SetDefault(g.logger)
	// go-libp2p logs through gologshim: give it our handler so that users
	// see one log, in one format, with libp2p's noise held back unless -v.
	gologshim.SetDefaultHandler(&libp2pHandler{Handler: h, min: libp2pLevel(g.verbose)})
	return nil
}

func newLogHandler(w io.Writer, format string, level slog.Leveler) (slog.Handler, error) {
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(format) {
	case "text", "":
		return slog.NewTextHandler(w, opts), nil
	case "json":
		return slog.NewJSONHandler(w, opts), nil
	default:
		return nil, usagef("bad --log-format %q: use text or json", format)
	}
}

func libp2pLevel(verbose int) slog.Level {
	switch {
	case verbose >= 2:
		return slog.LevelDebug
	case verbose == 1:
		return slog.LevelInfo
	default:
		return slog.LevelWarn
	}
}

// libp2pHandler passes go-libp2p's records to our handler at a higher
// minimum level: libp2p logs routine network trouble (a peer that went away)
// at info, which is noise to a user of p2pnode.
type libp2pHandler struct {
	slog.Handler
	min slog.Level
}

// Enabled reports whether l reaches both the libp2p minimum and ours.
func (h *libp2pHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

// WithAttrs keeps the libp2p minimum on derived handlers.
func (h *libp2pHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &libp2pHandler{Handler: h.Handler.WithAttrs(attrs), min: h.min}
}

// WithGroup keeps the libp2p minimum on derived handlers.
func (h *libp2pHandler) WithGroup(name string) slog.Handler {
	return &libp2pHandler{Handler: h.Handler.WithGroup(name), min: h.min}
}
