package cliflags

import (
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
)

// TestGlobal: a global flag works before the command, after it, after a
// subcommand, and from the environment; given on both sides, the one after
// the command wins.
func TestGlobal(t *testing.T) {
	type seen struct {
		format string
		wait   time.Duration
		on     bool
	}
	var got seen
	record := func(c *cli.Context) error {
		got = seen{c.String("log-format"), c.Duration("wait"), c.Bool("on")}
		return nil
	}
	newApp := func() *cli.App {
		app := &cli.App{
			Name:   "prog",
			Writer: io.Discard, ErrWriter: io.Discard,
			Commands: []*cli.Command{
				{Name: "run", Action: record, Flags: []cli.Flag{&cli.StringFlag{Name: "data"}}},
				{Name: "own", Action: record, Flags: []cli.Flag{&cli.DurationFlag{Name: "wait", Value: time.Minute, Usage: "its own"}}},
				{Name: "alias", Subcommands: []*cli.Command{{Name: "set", Action: record}}},
			},
		}
		Global(app, func() []cli.Flag {
			return append(Flags("PROG_TEST"),
				&cli.DurationFlag{Name: "wait", Value: time.Second},
				&cli.BoolFlag{Name: "on"})
		})
		return app
	}
	for _, tt := range []struct {
		name string
		env  string
		args []string
		want seen
	}{
		{"defaults", "", []string{"run"}, seen{"text", time.Second, false}},
		{"before", "", []string{"--log-format", "json", "--wait", "5s", "--on", "run"}, seen{"json", 5 * time.Second, true}},
		{"after", "", []string{"run", "--log-format", "json", "--wait", "5s", "--on"}, seen{"json", 5 * time.Second, true}},
		{"both, after wins", "", []string{"--log-format", "text", "run", "--log-format", "json"}, seen{"json", time.Second, false}},
		{"subcommand, before", "", []string{"--log-format", "json", "alias", "set"}, seen{"json", time.Second, false}},
		{"subcommand, between", "", []string{"alias", "--wait", "3s", "set"}, seen{"text", 3 * time.Second, false}},
		{"subcommand, after", "", []string{"alias", "set", "--on"}, seen{"text", time.Second, true}},
		{"own flag, default", "", []string{"own"}, seen{"text", time.Minute, false}},
		{"own flag, before", "", []string{"--wait", "5s", "own"}, seen{"text", 5 * time.Second, false}},
		{"own flag, after", "", []string{"own", "--wait", "7s"}, seen{"text", 7 * time.Second, false}},
		{"environment", "json", []string{"run"}, seen{"json", time.Second, false}},
		{"flag over environment", "json", []string{"run", "--log-format", "text"}, seen{"text", time.Second, false}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("PROG_TEST_LOG_FORMAT", tt.env) // restored after the test
			if tt.env == "" {
				os.Unsetenv("PROG_TEST_LOG_FORMAT")
			}
			got = seen{}
			if err := newApp().Run(append([]string{"prog"}, tt.args...)); err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("prog %q: got %+v, want %+v", tt.args, got, tt.want)
			}
		})
	}
}

func TestFormatVersion(t *testing.T) {
	platform := runtime.GOOS + "/" + runtime.GOARCH
	for _, tt := range []struct {
		name string
		bi   *debug.BuildInfo
		want string
	}{
		{"no build info", nil, "unknown (commit unknown, " + runtime.Version() + " " + platform + ")"},
		{"no vcs", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}},
			"(devel) (commit unknown, go1.26.8 " + platform + ")"},
		{"clean", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.3"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "15c0c542c66989aec4b01297c97887d8c5f05db9"}, {Key: "vcs.modified", Value: "false"}}},
			"v1.2.3 (commit 15c0c542c66989aec4b01297c97887d8c5f05db9, go1.26.8 " + platform + ")"},
		{"modified", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "abc"}, {Key: "vcs.modified", Value: "true"}}},
			"(devel) (commit abc, modified, go1.26.8 " + platform + ")"},
	} {
		if got := formatVersion(tt.bi); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}
