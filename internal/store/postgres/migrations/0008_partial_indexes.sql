-- Fewer pages written per purchase. Two indexes held every purchase ever
-- made, and each step of a purchase moved its entry: the one by status and
-- last change (deleted and inserted again at pending → authorized →
-- approved) and the one by card and reference (inserted with no card,
-- moved when a card bound the request, at a random place: the reference
-- is random). Their readers ask for a few statuses only, named as
-- literals in the queries (a partial index serves a query only then):
-- Sweep for authorized requests by last change
-- (store.Merchants.AuthorizedPurchases), a device asking again by
-- reference for a purchase its card paid (store.Merchants.PaidPurchase).
-- Now a purchase enters the first while authorized only, and the second
-- once, when it is paid.
DROP INDEX purchases_status_updated;
CREATE INDEX purchases_authorized_updated ON purchases (updated, id) WHERE status = 'authorized';
DROP INDEX purchases_card_reference;
CREATE INDEX purchases_paid_card_reference ON purchases (card, reference, created, id)
	WHERE status IN ('approved', 'refunded-partially');
