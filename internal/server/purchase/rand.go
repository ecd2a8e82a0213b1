package purchase

import "crypto/rand"

var randReader = rand.Reader
