package ivr

import (
	"testing"

	"cardlink/internal/money"
)

func TestSpoken(t *testing.T) {
	for _, tt := range []struct {
		a    money.Amount
		want string
	}{
		{money.Amount{Minor: 1250, Currency: "EUR"}, "12 euro 50."},
		{money.Amount{Minor: 1205, Currency: "EUR"}, "12 euro 5."},
		{money.Amount{Minor: 1200, Currency: "USD"}, "12 dollars."},
		{money.Amount{Minor: 7, Currency: "GBP"}, "0 pounds 7."},
		{money.Amount{Minor: 500, Currency: "JPY"}, "500 JPY."},
	} {
		if got := spoken(tt.a); got != tt.want {
			t.Errorf("spoken(%v) = %q, want %q", tt.a, got, tt.want)
		}
	}
}
