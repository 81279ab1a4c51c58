#!/usr/bin/env bash
# Starts moto (with flotilla's control endpoint) on 127.0.0.1 in the background.
#
#   test-support/moto/start.sh [PORT]
#
# Creates or reuses a virtualenv ($MOTO_VENV, default /work/.venv-moto),
# installs requirements.txt into it, starts moto_server.py on PORT (or
# $MOTO_PORT, or a free port), waits until it answers and prints
#
#   FLOTILLA_TEST_AWS_ENDPOINT=http://127.0.0.1:PORT
#   MOTO_PID=PID
#
# so a caller can `eval "$(test-support/moto/start.sh)"` (then export both).
# The server's log goes to $MOTO_LOG (default: /tmp/flotilla-moto-PORT.log).
# Stop it with `kill $MOTO_PID`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${MOTO_VENV:-/work/.venv-moto}"
if [ -z "${MOTO_VENV:-}" ] && ! { mkdir -p "$(dirname "$venv")" && [ -w "$(dirname "$venv")" ]; } 2>/dev/null; then
    venv="${XDG_CACHE_HOME:-$HOME/.cache}/flotilla-venv-moto"
    mkdir -p "$(dirname "$venv")"
fi
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv" >&2
fi
stamp="$venv/.flotilla-requirements"
if ! cmp -s "$here/requirements.txt" "$stamp" 2>/dev/null; then
    "$venv/bin/pip" install --disable-pip-version-check -q -r "$here/requirements.txt" >&2
    cp "$here/requirements.txt" "$stamp"
fi

port="${1:-${MOTO_PORT:-}}"
if [ -z "$port" ]; then
    port="$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
fi
log="${MOTO_LOG:-/tmp/flotilla-moto-$port.log}"

nohup "$venv/bin/python" "$here/moto_server.py" --host 127.0.0.1 --port "$port" >"$log" 2>&1 &
pid=$!

for _ in $(seq 1 300); do
    if "$venv/bin/python" - "$port" <<'PY' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/_flotilla/health", timeout=1).read()
PY
    then
        echo "FLOTILLA_TEST_AWS_ENDPOINT=http://127.0.0.1:$port"
        echo "MOTO_PID=$pid"
        exit 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "moto exited before answering; its log ($log):" >&2
        cat "$log" >&2
        exit 1
    fi
    sleep 0.1
done
echo "moto did not answer on 127.0.0.1:$port within 30 s; log: $log" >&2
kill "$pid" 2>/dev/null || true
exit 1
