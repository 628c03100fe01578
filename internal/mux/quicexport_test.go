package mux

// CrashQUICListener ends l as a killed relay process would: its socket
// closes first, so that nothing, in particular no CONNECTION_CLOSE, reaches
// the nodes; then the listener's goroutines are reaped.
func CrashQUICListener(l *QUICListener) {
	l.tr.Conn.Close()
	l.Close()
}

// OpenQUICStreamNow opens a stream on a QUIC session without waiting for
// stream credit: it fails with quic.StreamLimitReachedError instead.
func OpenQUICStreamNow(s Session) error {
	_, err := s.(*quicSession).conn.OpenStream()
	return err
}
