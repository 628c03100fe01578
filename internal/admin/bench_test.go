package admin_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"paradigm/internal/admin"
	"paradigm/internal/relay"
	"paradigm/internal/testenv"
)

// BenchmarkScrape measures one /metrics scrape, and the API's playnode
// list, of a relay that knows 500 playnodes with 3 portaliases each.
func BenchmarkScrape(b *testing.B) {
	const playnodes, services = 500, 3
	low, high := testenv.PortWindow(playnodes * services * 2)
	dir := b.TempDir()
	var sb strings.Builder
	port := low
	for i := range playnodes {
		for _, svc := range []string{"ssh", "web", "player"}[:services] {
			fmt.Fprintf(&sb, "signage-%03d %s %d\n", i, svc, port)
			port++
		}
	}
	if err := os.WriteFile(filepath.Join(dir, relay.PortaliasFile), []byte(sb.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	r, err := relay.New(relay.Config{DataDir: dir, Listen: "127.0.0.1:0", PortLow: uint16(low), PortHigh: uint16(high)})
	if err != nil {
		b.Fatal(err)
	}
	a, err := admin.New(admin.Config{Relay: r, Listen: "127.0.0.1:0"})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- admin.RunWith(ctx, r, a) }()
	defer func() {
		cancel()
		<-done
	}()
	for _, path := range []string{"/metrics", "/api/v1/playnodes"} {
		b.Run(strings.TrimPrefix(path, "/"), func(b *testing.B) {
			var n int64
			for b.Loop() {
				resp, err := http.Get(a.URL() + path)
				if err != nil {
					b.Fatal(err)
				}
				n, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			b.ReportMetric(float64(n), "bytes/op")
		})
	}
}
