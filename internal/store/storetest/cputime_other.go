//go:build !unix

package storetest

import "time"

// CPUTime is 0 where getrusage is missing: the CPU metrics of the
// benchmarks read 0.
func CPUTime() time.Duration { return 0 }
