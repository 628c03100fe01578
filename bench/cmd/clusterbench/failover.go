package main

import "paradigm/internal/node"

// nodeFailover reports whether this tree's node fails over between
// several relays by itself (node.Config.Relays, issue 15). Without it the
// run moves the killed relay's playnodes to a surviving relay itself.
const nodeFailover = false

// setRelays gives cfg its relays in order of preference; without node
// failover only the first.
func setRelays(cfg *node.Config, relays []string) { cfg.Relay = relays[0] }
