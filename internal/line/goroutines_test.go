package line

import "runtime"

func goroutines() int { return runtime.NumGoroutine() }
