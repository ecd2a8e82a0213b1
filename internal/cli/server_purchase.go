package cli

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"cardlink/internal/server"
	"cardlink/internal/server/api"
	"cardlink/internal/server/auth"
	"cardlink/internal/server/ledger"
	"cardlink/internal/server/pki"
	"cardlink/internal/server/purchase"
	"cardlink/internal/server/purse"
	"cardlink/internal/store"
)

// sweepInterval is how often the server expires purchase requests and
// finishes postings a crash interrupted.
const sweepInterval = 10 * time.Second

// purchaseDeps are what the purchase service is built from.
type purchaseDeps struct {
	store    store.Store
	auth     *auth.Service
	issuer   *pki.Issuer
	notifier *api.Notifier
	log      *slog.Logger
}

// wirePurchases opens the ledger over the store, builds the purchase
// service and, when the store keeps purses, the e-money service (loads
// signed with the issuer's key), hands them to the device listener's and
// the API's configs and starts their sweep loops. A store that keeps no
// ledger or no merchants serves no purchases (logged). stop ends the sweep
// loops and closes the ledger: call it after the listeners stopped.
func wirePurchases(ctx context.Context, d purchaseDeps, srv *server.Config, ac *api.Config) (stop func(), err error) {
	sl, ok := d.store.(store.Ledger)
	if !ok {
		d.log.Warn("the store keeps no ledger: purchases are off", "store", d.store)
		return func() {}, nil
	}
	if _, ok := d.store.(store.Merchants); !ok {
		d.log.Warn("the store keeps no merchants: purchases are off", "store", d.store)
		return func() {}, nil
	}
	lg := ledger.New(sl, ledger.Options{})
	svc, err := purchase.New(purchase.Config{
		Store:    d.store,
		Ledger:   lg,
		Auth:     d.auth,
		SignItem: d.issuer.SignItem,
		Notify:   d.notifier.NotifyPurchase,
		Logger:   d.log,
	})
	if err != nil {
		lg.Close()
		return nil, err
	}
	srv.Purchases = svc
	ac.Purchases, ac.Ledger = svc, lg
	var ps *purse.Service
	if _, ok := d.store.(store.Purses); ok {
		ps, err = purse.New(purse.Config{Store: d.store, Ledger: lg, Auth: d.auth, SignLoad: d.issuer.SignLoad, Logger: d.log})
		if err != nil {
			lg.Close()
			return nil, err
		}
		srv.Purses, ac.Purses = ps, ps
	} else {
		d.log.Warn("the store keeps no purses: e-money is off", "store", d.store)
	}
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { svc.Run(runCtx, sweepInterval) })
	if ps != nil {
		wg.Go(func() { ps.Run(runCtx, sweepInterval) })
	}
	return func() {
		cancel()
		wg.Wait()
		lg.Close()
	}, nil
}
