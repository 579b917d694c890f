//go:build race

package migration

// raceDetector: the tests run under go test -race.
const raceDetector = true
