#!/usr/bin/env bash
# Runs schemathesis against a real flotilla server and fails on any 5xx or
# any response that breaks its own schema in the served OpenAPI document.
#
#   test-support/schemathesis/run.sh PATH/TO/flotilla [MAX_EXAMPLES]
#
# Creates or reuses a virtualenv ($ST_VENV, default /work/.venv-st, else
# under $XDG_CACHE_HOME), installs requirements.txt into it, starts the
# binary on 127.0.0.1 with the embedded default (SQLite, local engine) in a
# temporary data directory, seeds a definition and a finished run (so the
# id-taking routes answer 200, not only 404), runs the examples, coverage
# and fuzzing phases with the not_a_server_error and
# response_schema_conformance checks, and stops the server.
set -euo pipefail

bin="${1:?usage: run.sh PATH/TO/flotilla [MAX_EXAMPLES]}"
max_examples="${2:-50}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${ST_VENV:-/work/.venv-st}"
if [ -z "${ST_VENV:-}" ] && ! { mkdir -p "$(dirname "$venv")" && [ -w "$(dirname "$venv")" ]; } 2>/dev/null; then
    venv="${XDG_CACHE_HOME:-$HOME/.cache}/flotilla-venv-st"
    mkdir -p "$(dirname "$venv")"
fi
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" >&2
fi
stamp="$venv/.flotilla-requirements"
if ! cmp -s "$here/requirements.txt" "$stamp" 2>/dev/null; then
    "$venv/bin/pip" install -q -r "$here/requirements.txt" >&2
    cp "$here/requirements.txt" "$stamp"
fi

work=$(mktemp -d /tmp/flotilla-st.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
base="http://127.0.0.1:$port"
FLOTILLA_LISTEN="127.0.0.1:$port" FLOTILLA_DATA_DIR="$work/data" RUST_LOG=warn \
    "$bin" >"$work/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do
    curl -sf "$base/health" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -sf "$base/health" >/dev/null || { cat "$work/server.log" >&2; echo "server did not start" >&2; exit 1; }

json() { python3 -c "import sys,json; print(json.load(sys.stdin)$1)"; }
api="$base/api/v6"
def=$(curl -sf -X POST "$api/task" -d '{"alias":"st","image":"busybox","group_name":"st","command":"echo schemathesis"}' | json '["definition_id"]')
run=$(curl -sf -X PUT "$api/task/$def/execute" -d '{"run_tags":{"owner_id":"st"}}' | json '["run_id"]')
for _ in $(seq 1 100); do
    [ "$(curl -sf "$api/$run/status" | json '["status"]')" = STOPPED ] && break
    sleep 0.1
done
cat >"$work/schemathesis.toml" <<TOML
[parameters]
definition_id = "$def"
run_id = "$run"
alias = "st"
cluster_id = "default"
TOML

cd "$work"
"$venv/bin/schemathesis" --config-file "$work/schemathesis.toml" run "$base/api/openapi.json" \
    --url "$base" \
    --checks not_a_server_error,response_schema_conformance \
    --phases examples,coverage,fuzzing \
    --max-examples "$max_examples" \
    --workers 2
