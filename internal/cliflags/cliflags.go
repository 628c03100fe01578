// Package cliflags is the command-line configuration both binaries share:
// the --log-level and --log-format flags and the slog handler they select,
// global flags accepted before and after the command, the --procs setting,
// and the --version text.
package cliflags

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

	"paradigm/internal/node"
)

// Flags returns --log-level and --log-format, read from the environment as
// PREFIX_LOG_LEVEL and PREFIX_LOG_FORMAT too.
func Flags(envPrefix string) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error", EnvVars: []string{envPrefix + "_LOG_LEVEL"}},
		&cli.StringFlag{Name: "log-format", Value: "text", Usage: "text or json", EnvVars: []string{envPrefix + "_LOG_FORMAT"}},
	}
}

// New builds the logger the flags in c ask for, writing to w.
func New(c *cli.Context, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", c.String("log-level"))
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(c.String("log-format")) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", c.String("log-format"))
	}
}

// SetProcs applies the int flag name (--procs) to GOMAXPROCS: 0 restores
// Go's default (the CPUs this process may use), more sets that many. A
// GOMAXPROCS environment variable wins over the flag's default, not over
// the flag given explicitly.
func SetProcs(c *cli.Context, name string) error {
	n := c.Int(name)
	if n < 0 {
		return fmt.Errorf("--%s %d: want 0 (all CPUs) or a positive count", name, n)
	}
	if !c.IsSet(name) && os.Getenv("GOMAXPROCS") != "" {
		return nil
	}
	if n == 0 {
		runtime.SetDefaultGOMAXPROCS()
		return nil
	}
	runtime.GOMAXPROCS(n)
	return nil
}

// Global makes the flags that global returns work on both sides of the
// command: it sets them as app's flags and appends a fresh set to every
// command and subcommand, whose Before then takes the value given before
// the command when none was given after it (after wins when both are). So
// `prog --log-format json run` and `prog run --log-format json` are the
// same, and c.String("log-format") in any action sees it. A command that
// defines a flag of the same name keeps its own (its usage text, say), which
// still takes the value given before the command. global is called once per
// command because a flag value may be applied to one flag set only. Only
// scalar flags (string, bool, int, duration) may be global. Call it once,
// after app.Commands is complete:
//
//	cliflags.Global(app, func() []cli.Flag { return cliflags.Flags("PARADIGM_NODE") })
func Global(app *cli.App, global func() []cli.Flag) {
	app.Flags = append(app.Flags, global()...)
	var names []string
	for _, f := range global() {
		names = append(names, f.Names()[0])
	}
	var attach func(cmds []*cli.Command)
	attach = func(cmds []*cli.Command) {
		for _, cmd := range cmds {
			for _, f := range global() {
				if !defines(cmd, f.Names()[0]) {
					cmd.Flags = append(cmd.Flags, f)
				}
			}
			cmd.Before = inheritThen(names, cmd.Before)
			attach(cmd.Subcommands)
		}
	}
	attach(app.Commands)
}

// defines reports whether cmd has its own flag called name.
func defines(cmd *cli.Command, name string) bool {
	for _, f := range cmd.Flags {
		if slices.Contains(f.Names(), name) {
			return true
		}
	}
	return false
}

// inheritThen returns a Before that copies each of names given to a parent
// command, but not to this one, into this command's flag, then runs next.
func inheritThen(names []string, next cli.BeforeFunc) cli.BeforeFunc {
	return func(c *cli.Context) error {
		local := c.LocalFlagNames()
		for _, name := range names {
			if slices.Contains(local, name) {
				continue
			}
			for _, p := range c.Lineage()[1:] {
				if !slices.Contains(p.LocalFlagNames(), name) {
					continue
				}
				if err := c.Set(name, fmt.Sprint(p.Value(name))); err != nil {
					return fmt.Errorf("--%s: %w", name, err)
				}
				break
			}
		}
		if next != nil {
			return next(c)
		}
		return nil
	}
}

// Version describes this binary for --version: the main module's version,
// the commit it was built from (with ", modified" when the work tree had
// changes) and the Go release and platform, all from the build info that
// `go build` embeds. A build without VCS information (-buildvcs=false, or
// outside a git work tree) says "commit unknown".
func Version() string {
	bi, _ := debug.ReadBuildInfo()
	return formatVersion(bi)
}

func formatVersion(bi *debug.BuildInfo) string {
	version, commit, modified := "unknown", "unknown", false
	goVersion := runtime.Version()
	if bi != nil {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		if bi.GoVersion != "" {
			goVersion = bi.GoVersion
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if modified {
		commit += ", modified"
	}
	return fmt.Sprintf("%s (commit %s, %s %s/%s)", version, commit, goVersion, runtime.GOOS, runtime.GOARCH)
}

// ApplyConfigFile sets every flag of c's command that the command line and
// the environment left unset from the node's config file at path: its keys
// are the command's flag names (global ones included), each value checked
// by node.ParseConfigFile against the flag's kind.
func ApplyConfigFile(c *cli.Context, path string) error {
	keys := map[string]node.Kind{}
	for _, f := range c.Command.Flags {
		name := f.Names()[0]
		switch f.(type) {
		case *cli.DurationFlag:
			keys[name] = node.KindDuration
		case *cli.BoolFlag:
			keys[name] = node.KindBool
		case *cli.IntFlag:
			keys[name] = node.KindInt
		case *cli.StringSliceFlag:
			keys[name] = node.KindList
		default:
			keys[name] = node.KindString
		}
	}
	delete(keys, "config")
	delete(keys, "help")
	settings, err := node.ParseConfigFile(path, keys)
	if err != nil {
		return err
	}
	explicit := map[string]bool{}
	for name := range keys {
		explicit[name] = c.IsSet(name)
	}
	for _, s := range settings {
		if explicit[s.Key] {
			continue
		}
		if err := c.Set(s.Key, s.Value); err != nil {
			return fmt.Errorf("%s:%d: %s: %v", path, s.Line, s.Key, err)
		}
	}
	return nil
}
