#!/usr/bin/env bash
# Start or stop the AWS-behaviour harness for the repave-aws tests: a moto
# server with AWS's documented behaviour patched in
# (crates/aws/harness/aws_harness.py says which, citing the AWS docs).
#
#   scripts/moto.sh start [PORT]   install moto in a venv if missing, start
#                                  the harness on 127.0.0.1:PORT (default
#                                  5055), wait until it answers, print the
#                                  endpoint (http://127.0.0.1:PORT) on stdout.
#   scripts/moto.sh stop [PORT]    stop the server started by `start`.
#
# Environment: MOTO_VENV (default target/moto-venv), MOTO_VERSION (pinned),
# REPAVE_MOTO_PORT (default port when PORT is not given: two checkouts can
# run their suites side by side on different ports).
# The tests read REPAVE_MOTO_ENDPOINT:
#   export REPAVE_MOTO_ENDPOINT=$(scripts/moto.sh start)
#   cargo test -p repave-aws
#   scripts/moto.sh stop
set -euo pipefail

cd "$(dirname "$0")/.."
VENV="${MOTO_VENV:-target/moto-venv}"
VERSION="${MOTO_VERSION:-5.2.5}"
CMD="${1:-start}"
PORT="${2:-${REPAVE_MOTO_PORT:-5055}}"
PIDFILE="$VENV/moto-$PORT.pid"
LOG="$VENV/moto-$PORT.log"

# parliament: the IAM linter `repave iam-policy` is checked with
# (crates/aws/tests/iam_lint.rs finds it in this venv).
PARLIAMENT_VERSION="1.6.4"

install() {
    if [ ! -x "$VENV/bin/moto_server" ] || ! "$VENV/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$VERSION')" 2>/dev/null; then
        echo "installing moto[server]==$VERSION into $VENV" >&2
        python3 -m venv "$VENV" >&2
        "$VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$VERSION" >&2
    fi
    if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('parliament') != '$PARLIAMENT_VERSION')" 2>/dev/null; then
        echo "installing parliament==$PARLIAMENT_VERSION into $VENV" >&2
        "$VENV/bin/pip" install --quiet --disable-pip-version-check "parliament==$PARLIAMENT_VERSION" >&2
    fi
}

answers() {
    python3 - "$PORT" <<'PY'
import sys, urllib.request
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/moto-api/", timeout=1)
except Exception:
    sys.exit(1)
PY
}

case "$CMD" in
    start)
        install
        if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null && answers; then
            echo "http://127.0.0.1:$PORT"
            exit 0
        fi
        nohup "$VENV/bin/python" crates/aws/harness/aws_harness.py -H 127.0.0.1 -p "$PORT" >"$LOG" 2>&1 &
        echo $! >"$PIDFILE"
        for _ in $(seq 1 100); do
            if answers; then
                echo "http://127.0.0.1:$PORT"
                exit 0
            fi
            if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
                echo "moto_server exited; log:" >&2
                cat "$LOG" >&2
                exit 1
            fi
            sleep 0.2
        done
        echo "moto_server did not answer on port $PORT within 20s; log:" >&2
        cat "$LOG" >&2
        exit 1
        ;;
    stop)
        if [ -f "$PIDFILE" ]; then
            kill "$(cat "$PIDFILE")" 2>/dev/null || true
            rm -f "$PIDFILE"
        fi
        ;;
    *)
        echo "usage: $0 start|stop [PORT]" >&2
        exit 2
        ;;
esac
