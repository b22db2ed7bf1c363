#!/usr/bin/env bash
# Throwaway PostgreSQL cluster for tests.
#
#   scripts/pg.sh start DIR   initdb a fresh cluster in DIR (created if missing, must be empty),
#                             listen on 127.0.0.1:<free port> plus a socket in DIR/sock, trust
#                             auth, create database "backflush", print its URL on stdout:
#                                 postgresql://postgres@127.0.0.1:PORT/backflush
#   scripts/pg.sh stop DIR    stop it (pg_ctl stop -m immediate) and remove DIR
#   scripts/pg.sh url DIR     print the URL of a running cluster started with "start"
#
# Only the URL goes to stdout; progress and errors go to stderr.
# Durability is switched off (fsync, full_page_writes, synchronous_commit): never use
# this for data you want to keep.
# When run as root, the server runs as the "postgres" OS user (created if missing).
set -euo pipefail

MARKER=".backflush-pg"
PG_USER=postgres

log() { printf 'pg.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    echo "usage: $0 start DIR | stop DIR | url DIR" >&2
    exit 2
}

# Directory holding initdb/pg_ctl/postgres (and, normally, pg_isready/psql).
find_pgbin() {
    local initdb
    if initdb=$(command -v initdb 2>/dev/null); then
        dirname "$(readlink -f "$initdb")"
        return
    fi
    local d
    for d in /usr/lib/postgresql/*/bin; do
        if [[ -x "$d/initdb" ]]; then
            echo "$d"
            return
        fi
    done
    die "initdb not found (install PostgreSQL server binaries)"
}

PGBIN=$(find_pgbin)

tool() {
    # Absolute path of a PostgreSQL tool, preferring the server's bin directory.
    if [[ -x "$PGBIN/$1" ]]; then
        echo "$PGBIN/$1"
    elif command -v "$1" >/dev/null 2>&1; then
        command -v "$1"
    else
        die "$1 not found"
    fi
}

IS_ROOT=0
[[ $(id -u) -eq 0 ]] && IS_ROOT=1

# Run a command as the cluster owner (the postgres OS user when we are root).
as_owner() {
    if [[ $IS_ROOT -eq 1 ]]; then
        if command -v runuser >/dev/null 2>&1; then
            runuser -u "$PG_USER" -- "$@"
        else
            su -s /bin/sh "$PG_USER" -c "$(printf '%q ' "$@")"
        fi
    else
        "$@"
    fi
}

ensure_pg_user() {
    [[ $IS_ROOT -eq 1 ]] || return 0
    if ! id -u "$PG_USER" >/dev/null 2>&1; then
        log "creating OS user $PG_USER"
        if command -v useradd >/dev/null 2>&1; then
            useradd --system --user-group --no-create-home --home-dir /nonexistent \
                --shell /usr/sbin/nologin "$PG_USER" >&2 \
                || useradd -r -U -M -s /bin/false "$PG_USER" >&2
        elif command -v adduser >/dev/null 2>&1; then
            adduser -S -D -H "$PG_USER" >&2 || adduser --system --group --no-create-home "$PG_USER" >&2
        else
            die "cannot create OS user $PG_USER (no useradd/adduser)"
        fi
    fi
}

free_port() {
    python3 - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

url_for() { echo "postgresql://postgres@127.0.0.1:$1/backflush"; }

cmd_start() {
    local dir=$1
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd -P)
    if [[ -n "$(ls -A "$dir")" ]]; then
        die "$dir is not empty"
    fi
    touch "$dir/$MARKER"
    local data="$dir/data" sock="$dir/sock" logf="$dir/postgres.log"
    # Unix socket paths are limited to ~107 bytes ("/.s.PGSQL.NNNNN" is appended).
    if (( ${#sock} > 85 )); then
        die "socket directory path too long: $sock (use a shorter DIR)"
    fi
    mkdir -p "$sock"

    ensure_pg_user
    if [[ $IS_ROOT -eq 1 ]]; then
        chown -R "$PG_USER:" "$dir"
        chmod 700 "$dir"
        if ! as_owner test -w "$dir"; then
            die "user $PG_USER cannot reach $dir (a parent directory is not searchable); use a DIR under /tmp"
        fi
    fi

    log "initdb in $data ($PGBIN)"
    if ! (cd "$dir" && as_owner "$(tool initdb)" -D "$data" -U postgres -A trust -E UTF8 \
            --locale=C --no-sync) >"$dir/initdb.log" 2>&1; then
        cat "$dir/initdb.log" >&2
        die "initdb failed"
    fi

    cat >>"$data/postgresql.conf" <<EOF

# --- scripts/pg.sh: throwaway test cluster ---
listen_addresses = '127.0.0.1'
unix_socket_directories = '$sock'
fsync = off
full_page_writes = off
synchronous_commit = off
max_connections = 200
logging_collector = off
log_min_messages = warning
EOF
    [[ $IS_ROOT -eq 1 ]] && chown "$PG_USER:" "$data/postgresql.conf"

    # The port is picked before the server binds it; retry if someone else took it meanwhile.
    local port attempt started=0
    for attempt in 1 2 3 4 5; do
        port=$(free_port)
        log "starting on 127.0.0.1:$port (attempt $attempt)"
        if (cd "$dir" && as_owner "$(tool pg_ctl)" -D "$data" -l "$logf" -o "-p $port" \
                -w -t 60 start) >&2; then
            started=1
            break
        fi
        log "start failed; server log tail:"
        tail -n 20 "$logf" >&2 || true
        (cd "$dir" && as_owner "$(tool pg_ctl)" -D "$data" stop -m immediate) >/dev/null 2>&1 || true
    done
    [[ $started -eq 1 ]] || die "could not start PostgreSQL (log: $logf)"
    echo "$port" >"$dir/port"

    local isready i
    isready=$(tool pg_isready)
    for ((i = 0; i < 120; i++)); do
        if "$isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres; then
            break
        fi
        sleep 0.5
    done
    "$isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres \
        || die "server on port $port not ready (log: $logf)"

    if ! "$(tool psql)" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres \
            -c 'CREATE DATABASE backflush' >&2; then
        die "could not create database backflush"
    fi
    log "ready"
    url_for "$port"
}

cmd_stop() {
    local dir=$1
    if [[ ! -e "$dir" ]]; then
        log "$dir does not exist; nothing to stop"
        return 0
    fi
    dir=$(cd "$dir" && pwd -P)
    if [[ ! -e "$dir/$MARKER" ]]; then
        die "$dir was not created by scripts/pg.sh start; refusing to remove it"
    fi
    if [[ -f "$dir/data/postmaster.pid" ]]; then
        (cd "$dir" && as_owner "$(tool pg_ctl)" -D "$dir/data" -w -t 60 stop -m immediate) >&2 \
            || log "pg_ctl stop failed (server may already be gone)"
    fi
    rm -rf -- "$dir"
    log "stopped and removed $dir"
}

cmd_url() {
    local dir=$1
    [[ -f "$dir/port" ]] || die "no cluster in $dir"
    url_for "$(cat "$dir/port")"
}

[[ $# -eq 2 ]] || usage
case "$1" in
    start) cmd_start "$2" ;;
    stop) cmd_stop "$2" ;;
    url) cmd_url "$2" ;;
    *) usage ;;
esac
