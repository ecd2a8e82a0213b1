-- Purchases by card and reference, newest last: a device asking again by
-- reference for a purchase its card paid (the answer was lost) finds it
-- without scanning every paid purchase (store.Merchants.PaidPurchase).
CREATE INDEX IF NOT EXISTS purchases_card_reference ON purchases (card, reference, created, id);
