package mux

// CrashQUICListener ends l as a killed relay process would: its socket
// closes first, so that nothing, in particular no CONNECTION_CLOSE, reaches
// the nodes; then the listener's goroutines are reaped.
func CrashQUICListener(l *QUICListener) {
	l.tr.Conn.Close()
	l.Close()
}
