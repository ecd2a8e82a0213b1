// Package interop holds the tests that run cardlink's card through the
// machine's real PC/SC stack: a pcscd started by the tests, vsmartcard's
// vpcd driver, the card attached with "cardlink card attach", and the tools
// people use with cards — OpenSC (opensc-tool, pkcs15-tool, pkcs11-tool),
// yubico-piv-tool, openssl and piv-go — plus cardlink's own pcsc driver.
//
// The tests sit behind the build tag "pcsc" and need the packages that
// scripts/pcsc-deps.sh installs; with the tag but without the packages they
// skip, naming what is missing. They start and stop their own pcscd, so
// none may be running already. Run them with
//
//	go test -race -tags pcsc ./internal/interop/
//
// The package has no code of its own.
package interop
