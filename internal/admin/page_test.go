package admin_test

import (
	"context"
	"flag"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

var screenshot = flag.String("screenshot", "", "write a screenshot of the status page to this PNG file (docs/status-page.png)")

// chromium finds the browser; under CI its absence fails the test (.ci/run
// installs it), elsewhere it skips.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed (apt-get install chromium); CI needs it for the status page test")
	}
	t.Skip("chromium is not installed: the status page test needs it (apt-get install chromium)")
	return ""
}

// browser starts a headless Chromium that stays off the network: every
// background service that would call home is off.
func browser(t *testing.T, width, height int) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium(t)),
		chromedp.Headless,
		chromedp.DisableGPU,
		chromedp.NoSandbox, // tests run as root in CI containers
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(width, height),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("no-pings", true),
		chromedp.Flag("disable-dev-shm-usage", true),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 60*time.Second)
	t.Cleanup(func() {
		cancelTimeout()
		cancelCtx()
		cancelAlloc()
	})
	return ctx
}

func TestStatusPage(t *testing.T) {
	ctx := browser(t, 1100, 520)
	f := newFixture(t, []string{"kiosk-lobby", "signage-001", "signage-002"}, nil)
	echo := echoService(t)
	f.startNode("signage-001", "ssh="+echo, "web="+echo)
	stop := f.startNode("signage-002", "ssh="+echo, "web="+echo)
	f.startNode("kiosk-lobby", "player="+echo)
	for _, n := range []string{"signage-001", "signage-002", "kiosk-lobby"} {
		f.waitOnline(n, true)
	}

	if err := chromedp.Do(ctx,
		chromedp.Navigate(f.url+"/"),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-playnode="signage-002"][data-state="online"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#live.on`)),
	); err != nil {
		t.Fatalf("open the status page: %v", err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[int](`window.loadMarker = 42`)); err != nil {
		t.Fatal(err)
	}

	stop() // signage-002 goes down: its row turns offline, live
	f.waitOnline("signage-002", false)
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`tr[data-playnode="signage-002"][data-state="offline"]`))); err != nil {
		t.Fatalf("wait for signage-002 offline: %v", err)
	}
	text, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`tr[data-playnode="signage-002"] td.state`)))
	if err != nil {
		t.Fatal(err)
	}
	marker, err := chromedp.Run(ctx, chromedp.Evaluate[int](`window.loadMarker`))
	if err != nil {
		t.Fatal(err)
	}
	if text != "offline" || marker != 42 {
		t.Fatalf("signage-002: got state %q, marker %d; want offline without a reload (marker 42)", text, marker)
	}
	if *screenshot != "" {
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(*screenshot, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// The filter box hides what does not match.
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.CSS(`#filter`), "player"),
		chromedp.WaitNotPresent(chromedp.CSS(`tr[data-playnode="signage-001"]`)),
	); err != nil {
		t.Fatalf("filter: %v", err)
	}
	rows, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#rows tr").length`))
	if err != nil {
		t.Fatal(err)
	}
	if rows != 1 {
		t.Fatalf("filter \"player\": got %d rows, want 1 (kiosk-lobby)", rows)
	}

	// On a phone each playnode is a card: no table header, nothing wider
	// than the screen.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile)); err != nil {
		t.Fatal(err)
	}
	layout, err := chromedp.Run(ctx, chromedp.Evaluate[string](
		`getComputedStyle(document.querySelector("thead")).display + " " + (document.documentElement.scrollWidth <= 390)`))
	if err != nil {
		t.Fatal(err)
	}
	if layout != "none true" {
		t.Errorf("at 390 px: got header display and fits %q, want \"none true\"", layout)
	}
}
