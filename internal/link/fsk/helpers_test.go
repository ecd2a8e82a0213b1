package fsk

// editDistance is the Levenshtein distance between want and got: the
// byte errors of a reception, counting lost, extra and wrong bytes.
func editDistance(want, got []byte) int {
	prev := make([]int, len(got)+1)
	cur := make([]int, len(got)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(want); i++ {
		cur[0] = i
		for j := 1; j <= len(got); j++ {
			c := prev[j-1]
			if want[i-1] != got[j-1] {
				c++
			}
			cur[j] = min(c, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(got)]
}
