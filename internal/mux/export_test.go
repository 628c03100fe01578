package mux

// Hooks for the external tests into the SSH session's lanes.

func NumLanes(s Session) int {
	ss := s.(*sshSession)
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return len(ss.lanes)
}

func OpenLane(s Session) error {
	_, err := s.(*sshSession).openLane()
	return err
}

func CloseLane(s Session, i int) {
	ss := s.(*sshSession)
	ss.mu.Lock()
	l := ss.lanes[i]
	ss.mu.Unlock()
	l.ymx.Close()
}

const MaxLanes = maxLanes

// OpenStreamOnLane opens a stream on lane i, which a node never does.
func OpenStreamOnLane(s Session, i int) error {
	ss := s.(*sshSession)
	ss.mu.Lock()
	l := ss.lanes[i]
	ss.mu.Unlock()
	st, err := l.ymx.OpenStream()
	if err == nil {
		_, err = st.Write([]byte{0})
	}
	return err
}
