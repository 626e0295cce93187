#!/usr/bin/env bash
# Run a command with a throw-away PostgreSQL server up on loopback.
#
#   bash .ci/postgres.sh COMMAND [ARGS...]
#
# Installs Debian's postgresql if it is missing (needs root), initialises a cluster in a
# temporary folder, starts it on 127.0.0.1 on a free port, creates the database `lowcarb_test`,
# exports LOWCARB_TEST_POSTGRES_URL for COMMAND, and stops the server and removes the folder on
# exit, whatever COMMAND's outcome. The exit status is COMMAND's.
#
# As root the server runs as the `postgres` user (PostgreSQL refuses to run as root); as any other
# user it runs as that user. Tests that need PostgreSQL read LOWCARB_TEST_POSTGRES_URL and fail
# loudly when it is set but unreachable.
set -euo pipefail

if [ "$#" -eq 0 ]; then
    echo "usage: bash .ci/postgres.sh COMMAND [ARGS...]" >&2
    exit 2
fi

find_bindir() {
    # Debian keeps the server binaries out of PATH, one folder per major version.
    local dir
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
            echo "$dir"
            return 0
        fi
    done
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
        return 0
    fi
    return 1
}

BINDIR="$(find_bindir || true)"
if [ -z "$BINDIR" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "postgres.sh: PostgreSQL is not installed and installing it needs root:" \
             "run 'apt-get install -y postgresql' as root, then retry" >&2
        exit 1
    fi
    echo "postgres.sh: installing Debian's postgresql" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
    BINDIR="$(find_bindir)"
fi

RUN_AS=()
if [ "$(id -u)" -eq 0 ]; then
    if ! id postgres >/dev/null 2>&1; then
        useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    fi
    RUN_AS=(runuser -u postgres --)
fi

PGTMP="$(mktemp -d "${TMPDIR:-/tmp}/lowcarb-pg.XXXXXX")"
chmod 755 "$PGTMP"
if [ "${#RUN_AS[@]}" -gt 0 ]; then
    chown postgres "$PGTMP"
fi
DATA="$PGTMP/data"
LOG="$PGTMP/server.log"

stop_server() {
    local status=$?
    if [ -f "$DATA/postmaster.pid" ]; then
        "${RUN_AS[@]}" "$BINDIR/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$PGTMP"
    exit "$status"
}
trap stop_server EXIT
trap 'exit 130' INT TERM

free_port() {
    # The kernel picks a free port; the tiny window before the server binds it is acceptable
    # for a test server (a clash makes pg_ctl fail loudly below).
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
PORT="$(free_port)"

"${RUN_AS[@]}" "$BINDIR/initdb" -D "$DATA" -U postgres --auth=trust --encoding=UTF8 \
    --no-locale >"$PGTMP/initdb.log" 2>&1 || {
    echo "postgres.sh: initdb failed:" >&2
    cat "$PGTMP/initdb.log" >&2
    exit 1
}

# Unix socket in the temporary folder: /var/run/postgresql may not exist or be writable.
# fsync off: a test server's data is thrown away, and fsync on a shared disk only slows tests.
"${RUN_AS[@]}" "$BINDIR/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -k $PGTMP -c fsync=off -c max_connections=200" \
    start >/dev/null || {
    echo "postgres.sh: the server did not start:" >&2
    cat "$LOG" >&2
    exit 1
}

"${RUN_AS[@]}" "$BINDIR/createdb" -h 127.0.0.1 -p "$PORT" -U postgres lowcarb_test

export LOWCARB_TEST_POSTGRES_URL="postgresql://postgres@127.0.0.1:$PORT/lowcarb_test"
echo "postgres.sh: $("$BINDIR/postgres" --version) up at $LOWCARB_TEST_POSTGRES_URL" >&2

# Not exec: the EXIT trap must run after COMMAND to stop the server.
set +e
"$@"
status=$?
set -e
exit "$status"
