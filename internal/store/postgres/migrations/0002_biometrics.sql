-- Server-side biometric matching (issue 3): a card's enrolled template and
-- its try counter, taken before each comparison like an online PIN's.

CREATE TABLE biometrics (
	card      text     PRIMARY KEY REFERENCES cards (number),
	template  bytea    NOT NULL,
	threshold integer  NOT NULL CHECK (threshold >= 0),
	tries     integer  NOT NULL CHECK (tries >= 0),
	max_tries integer  NOT NULL CHECK (max_tries >= 1)
);
