#!/usr/bin/env bash
# A throwaway PostgreSQL for tests: installed from Debian if missing, run as
# the postgres user in a fresh temporary directory, listening on 127.0.0.1
# only, on a free port other than 5432. No systemd; every wait is bounded.
#
#   scripts/postgres.sh start [--fsync-off] [--env FILE]
#       Starts a server and prints one line for eval:
#         export CARDLINK_TEST_POSTGRES='postgres://postgres@127.0.0.1:PORT/cardlink?sslmode=disable'
#       and writes the same line to FILE (default: ENV in the server's
#       directory; the directory is named in /tmp/cardlink-postgres.current,
#       or in $CARDLINK_PG_CURRENT: set it to run two servers at once).
#       --fsync-off turns fsync, synchronous_commit and full_page_writes off:
#       for functional tests only, never for durability tests or benchmarks.
#   scripts/postgres.sh stop
#       Stops the server that start started and removes its directory.
#
# Typical use (CI):
#   eval "$(scripts/postgres.sh start --fsync-off)"
#   trap 'scripts/postgres.sh stop' EXIT
#   go test -race ./internal/store/...
set -euo pipefail

CURRENT=${CARDLINK_PG_CURRENT:-/tmp/cardlink-postgres.current} # which server start/stop act on; set it to run two at once
START_TIMEOUT=60 # seconds pg_ctl waits for the server to accept connections
STOP_TIMEOUT=30

die() { echo "postgres.sh: $*" >&2; exit 1; }
log() { echo "postgres.sh: $*" >&2; }

# pgbin prints the newest installed PostgreSQL's bin directory, if any.
pgbin() {
	local d
	d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
	[ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && echo "$d"
}

install_postgres() {
	[ "$(id -u)" = 0 ] || die "PostgreSQL is not installed and I am not root: apt-get install postgresql"
	log "installing Debian's postgresql"
	export DEBIAN_FRONTEND=noninteractive
	timeout 300 apt-get update -qq >&2 || die "apt-get update failed"
	timeout 600 apt-get install -y -qq --no-install-recommends postgresql >&2 || die "apt-get install postgresql failed"
}

# as_pg runs a command as the postgres user when we are root (initdb and
# postgres refuse to run as root), else as ourselves.
as_pg() {
	if [ "$(id -u)" = 0 ]; then
		if command -v runuser >/dev/null; then
			runuser -u postgres -- "$@"
		else
			su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
		fi
	else
		"$@"
	fi
}

# port_free reports whether nothing listens on 127.0.0.1:$1.
port_free() {
	! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

start() {
	local fsync_off=0 envfile=""
	while [ $# -gt 0 ]; do
		case "$1" in
		--fsync-off) fsync_off=1 ;;
		--env) envfile="${2:?--env needs a file}"; shift ;;
		*) die "start: unknown flag $1" ;;
		esac
		shift
	done

	if [ -f "$CURRENT" ]; then
		log "stopping the server a previous start left running"
		stop
	fi

	local bin
	bin=$(pgbin) || true
	if [ -z "$bin" ]; then
		install_postgres
		bin=$(pgbin) || die "no initdb/pg_ctl under /usr/lib/postgresql after installing"
	fi
	if [ "$(id -u)" = 0 ]; then
		id postgres >/dev/null 2>&1 || die "no postgres user (Debian's postgresql package creates it)"
	fi

	local dir
	# /tmp, not $TMPDIR: the postgres user must be able to reach it.
	dir=$(mktemp -d /tmp/cardlink-pg.XXXXXX)
	chmod 755 "$dir"
	if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
	echo "$dir" >"$CURRENT"
	[ -n "$envfile" ] || envfile="$dir/env"

	as_pg "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync >"$dir/initdb.log" 2>&1 ||
		{ cat "$dir/initdb.log" >&2; die "initdb failed"; }

	local opts="-c listen_addresses=127.0.0.1 -c unix_socket_directories=$dir -c max_connections=200"
	if [ "$fsync_off" = 1 ]; then
		opts="$opts -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
	fi

	# Try a few ports: another process may take a free one before we do.
	local port="" try p
	for try in $(seq 1 20); do
		p=$((54320 + (RANDOM % 1000)))
		[ "$p" = 5432 ] && continue
		port_free "$p" || continue
		if as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t "$START_TIMEOUT" \
			-o "$opts -p $p" start >/dev/null 2>&1; then
			port=$p
			break
		fi
		log "port $p: start failed, trying another"
	done
	if [ -z "$port" ]; then
		tail -n 20 "$dir/server.log" >&2 2>/dev/null || true
		die "could not start PostgreSQL (log: $dir/server.log)"
	fi
	echo "$port" >"$dir/port"

	as_pg "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -q \
		-c "CREATE DATABASE cardlink" >&2 || die "creating database cardlink failed"

	local line="export CARDLINK_TEST_POSTGRES='postgres://postgres@127.0.0.1:$port/cardlink?sslmode=disable'"
	echo "$line" >"$envfile"
	log "PostgreSQL $(basename "$(dirname "$bin")") on 127.0.0.1:$port in $dir (fsync off: $fsync_off); env in $envfile"
	echo "$line"
}

stop() {
	[ -f "$CURRENT" ] || { log "nothing to stop"; return 0; }
	local dir bin
	dir=$(cat "$CURRENT")
	bin=$(pgbin) || true
	if [ -d "$dir/data" ] && [ -n "$bin" ]; then
		as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w -t "$STOP_TIMEOUT" stop >/dev/null 2>&1 ||
			as_pg "$bin/pg_ctl" -D "$dir/data" -m immediate -w -t "$STOP_TIMEOUT" stop >/dev/null 2>&1 || true
	fi
	case "$dir" in
	/tmp/cardlink-pg.*) rm -rf "$dir" ;;
	esac
	rm -f "$CURRENT"
	log "stopped"
}

case "${1:-}" in
start) shift; start "$@" ;;
stop) shift; stop "$@" ;;
*) die "usage: $0 start [--fsync-off] [--env FILE] | stop" ;;
esac
