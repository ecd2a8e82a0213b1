//go:build !unix

package server_test

import "time"

// cpuTime is 0 where getrusage is missing: the cpu-% metric reads 0.
func cpuTime() time.Duration { return 0 }
