//go:build !unix

package storetest

import "time"

// cpuTime is 0 where getrusage is missing: the cpu-µs/purchase metric reads 0.
func cpuTime() time.Duration { return 0 }
