-- Server-side biometric matching (issue 3): a card's enrolled template and
-- its try counter, taken before each comparison like an online PIN's.

CREATE TABLE biometrics (
	card      TEXT    PRIMARY KEY REFERENCES cards (number),
	template  BLOB    NOT NULL,
	threshold INTEGER NOT NULL CHECK (threshold >= 0),
	tries     INTEGER NOT NULL CHECK (tries >= 0),
	max_tries INTEGER NOT NULL CHECK (max_tries >= 1)
);
