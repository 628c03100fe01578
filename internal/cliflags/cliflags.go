// Package cliflags is the command-line configuration both binaries share:
// the --log-level and --log-format flags and the slog handler they select,
// and the --procs setting.
package cliflags

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"

	"github.com/urfave/cli/v2"
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
