//go:build race

package proto

// raceEnabled skips allocation guards: under -race sync.Pool drops items at random.
const raceEnabled = true
