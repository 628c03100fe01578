package admin

import (
	"embed"
	"net/http"
)

// staticFS holds the status page: one file, its style and script inline,
// nothing fetched from elsewhere.
//
//go:embed static/index.html
var staticFS embed.FS

func (s *Server) statusPage(w http.ResponseWriter, r *http.Request) {
	b, err := staticFS.ReadFile("static/index.html")
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; connect-src 'self'")
	w.Write(b)
}
