#!/usr/bin/env bash
# Installs the system packages the PC/SC tests (build tag pcsc) need: pcscd,
# vsmartcard's vpcd driver, OpenSC, pcsc-tools, yubico-piv-tool, the PC/SC
# headers for cgo, and openssl; and the other tools tests talk to:
# minimodem, multimon-ng, sox and espeak-ng (the telephone line), and tmux (the
# terminal UI). Debian/Ubuntu only, as root. Idempotent: when every package
# is already installed it returns at once without touching apt.
#
# After it: go test -race -tags pcsc ./internal/reader/pcsc/... ./internal/interop/...
set -euo pipefail

packages=(
	pcscd
	vsmartcard-vpcd
	opensc
	opensc-pkcs11
	pcsc-tools
	yubico-piv-tool
	libpcsclite-dev
	openssl
	# The telephone line's peers (modem and DTMF interop) and the terminal
	# UI's test harness.
	minimodem
	multimon-ng
	sox
	tmux
	espeak-ng
)

missing=()
for p in "${packages[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
	if [ "$status" != "installed" ]; then
		missing+=("$p")
	fi
done
if [ ${#missing[@]} -eq 0 ]; then
	echo "pcsc-deps: all installed"
	exit 0
fi

if ! command -v apt-get >/dev/null; then
	echo "pcsc-deps: apt-get not found; install by hand: ${missing[*]}" >&2
	exit 1
fi
as_root=()
if [ "$(id -u)" -ne 0 ]; then
	if ! command -v sudo >/dev/null; then
		echo "pcsc-deps: need root (or sudo) to install: ${missing[*]}" >&2
		exit 1
	fi
	as_root=(sudo)
fi

echo "pcsc-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
