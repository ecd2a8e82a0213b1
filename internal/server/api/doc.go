// Package api owns the server's HTTP API for operators, relying parties
// and merchants:
// routing, API-key authentication, JSON request decoding and validation,
// RFC 9457 problem+json errors, the embedded OpenAPI 3.1 document, and the
// webhook sender (Notifier) that tells a relying party its authentication
// request is finished and a merchant that its purchase finished or was
// refunded. Refunds and deposits it hands to the purchase service; balances
// and statements it reads from the ledger.
//
// Endpoints (the OpenAPI document at GET /openapi.json lists them all):
//
//	GET  /healthz                          no key
//	GET  /openapi.json                     no key
//	POST /v1/relying-parties               operator key
//	POST /v1/devices                       operator key
//	POST /v1/devices/{id}/revoke           operator key
//	POST /v1/cards/{number}/revoke         operator key
//	PUT    /v1/cards/{number}/online-pin   operator key
//	DELETE /v1/cards/{number}/online-pin   operator key
//	PUT    /v1/cards/{number}/biometric    operator key
//	DELETE /v1/cards/{number}/biometric    operator key
//	POST /v1/auth-requests                 relying-party key
//	GET  /v1/auth-requests/{id}            relying-party key
//	POST /v1/merchants                     operator key
//	POST /v1/items                         merchant key
//	GET  /v1/items                         merchant key
//	POST /v1/purchases                     merchant key
//	GET  /v1/purchases/{id}                merchant key
//	POST /v1/purchases/{id}/refunds        merchant key
//	GET  /v1/purchases/{id}/refunds        merchant key
//	GET  /v1/balance                       merchant key
//	GET  /v1/statement                     merchant key
//	POST /v1/cards/{number}/deposits       operator key
//	GET  /v1/accounts/{id}                 operator key
//	GET  /v1/accounts/{id}/statement       operator key
//
// It keeps no state of its own: records live behind the store package's
// interfaces, so that several server instances on one database serve the
// API interchangeably (idempotency keys included). It is the only package
// that maps errors to HTTP problems; problem details carry user-safe text,
// never a cause. It must not import a store backend (tests may), the device
// listener, the device, the card or its applets; the purchase service must
// not import it.
package api
