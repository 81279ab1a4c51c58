#!/usr/bin/env bash
# Starts the object-store emulators for flotilla's artifact store tests on
# 127.0.0.1 in the background: a Google Cloud Storage emulator
# (gcs_server.py) and Azurite's blob service, with a container
# `flotilla-test`.
#
#   test-support/objstores/start.sh
#
# Installs requirements.txt into a virtualenv ($OBJSTORES_VENV, default
# /work/.venv-objstores) and package.json's Azurite into $OBJSTORES_NODE
# (default /work/.node-objstores), then prints
#
#   FLOTILLA_TEST_GCS_ENDPOINT=http://127.0.0.1:PORT
#   FLOTILLA_TEST_AZURE_ENDPOINT=http://127.0.0.1:PORT/devstoreaccount1
#   OBJSTORES_PIDS="PID PID"
#
# Logs go to $OBJSTORES_LOG_DIR (default /tmp). Stop with `kill $OBJSTORES_PIDS`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${OBJSTORES_VENV:-/work/.venv-objstores}"
node_dir="${OBJSTORES_NODE:-/work/.node-objstores}"
logs="${OBJSTORES_LOG_DIR:-/tmp}"
if [ -z "${OBJSTORES_VENV:-}" ] && ! { mkdir -p "$(dirname "$venv")" && [ -w "$(dirname "$venv")" ]; } 2>/dev/null; then
    venv="${XDG_CACHE_HOME:-$HOME/.cache}/flotilla-venv-objstores"
    node_dir="${XDG_CACHE_HOME:-$HOME/.cache}/flotilla-node-objstores"
    mkdir -p "$(dirname "$venv")"
fi

if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv" >&2
fi
if ! cmp -s "$here/requirements.txt" "$venv/.flotilla-requirements" 2>/dev/null; then
    "$venv/bin/pip" install --disable-pip-version-check -q -r "$here/requirements.txt" >&2
    cp "$here/requirements.txt" "$venv/.flotilla-requirements"
fi
if ! command -v npm >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 && apt-get install -y -qq nodejs npm >/dev/null
fi
mkdir -p "$node_dir"
if ! cmp -s "$here/package.json" "$node_dir/package.json" 2>/dev/null; then
    cp "$here/package.json" "$node_dir/package.json"
    (cd "$node_dir" && npm install --silent --no-audit --no-fund >&2)
fi

free_port() {
    "$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
wait_for() { # NAME PID URL
    for _ in $(seq 1 300); do
        if "$venv/bin/python" - "$3" <<'PY' 2>/dev/null
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1], timeout=1).read()
except urllib.error.HTTPError:
    pass  # answering, with an error status: up
PY
        then return 0; fi
        if ! kill -0 "$2" 2>/dev/null; then
            echo "$1 exited before answering; see its log in $logs" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "$1 did not answer at $3 within 30 s" >&2
    return 1
}

gcs_port=$(free_port)
nohup "$venv/bin/python" "$here/gcs_server.py" --host 127.0.0.1 --port "$gcs_port" \
    >"$logs/flotilla-gcs-$gcs_port.log" 2>&1 &
gcs_pid=$!
wait_for "the GCS emulator" "$gcs_pid" "http://127.0.0.1:$gcs_port/"

az_port=$(free_port)
az_data=$(mktemp -d /tmp/flotilla-azurite.XXXXXX)
nohup "$node_dir/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$az_port" \
    --location "$az_data" --silent --skipApiVersionCheck \
    >"$logs/flotilla-azurite-$az_port.log" 2>&1 &
az_pid=$!
az_endpoint="http://127.0.0.1:$az_port/devstoreaccount1"
wait_for "Azurite" "$az_pid" "$az_endpoint?comp=list"
"$venv/bin/python" "$here/make_container.py" "$az_endpoint" flotilla-test >&2

echo "FLOTILLA_TEST_GCS_ENDPOINT=http://127.0.0.1:$gcs_port"
echo "FLOTILLA_TEST_AZURE_ENDPOINT=$az_endpoint"
echo "OBJSTORES_PIDS=\"$gcs_pid $az_pid\""
